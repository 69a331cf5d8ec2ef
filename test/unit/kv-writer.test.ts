/**
 * The control plane's KV writer against a fake agent on loopback: what it sends (token, cas,
 * dc, key segments encoded) and that answers which are not Consul's are errors, never data.
 */
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { ConsulKvWriter } from '../../src/consul/kv-writer.ts';

type Handler = (req: IncomingMessage, body: string, res: ServerResponse) => void;
let handler: Handler = (_req, _body, res) => res.end();
const seen: { method: string; url: string; token: string | undefined; body: string }[] = [];
const server = createServer((req, res) => {
  let body = '';
  req.setEncoding('utf8').on('data', (d: string) => (body += d));
  req.on('end', () => {
    seen.push({ method: req.method ?? '', url: req.url ?? '', token: req.headers['x-consul-token'] as string | undefined, body });
    handler(req, body, res);
  });
});
let writer: ConsulKvWriter;

before(async () => {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  writer = new ConsulKvWriter({ address: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, token: 'secret', dc: 'dc2' });
});
after(async () => {
  await writer.close();
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

const json = (status: number, value: unknown): Handler => (_req, _body, res) => {
  res.writeHead(status, { 'content-type': 'application/json', 'x-consul-index': '7' }).end(JSON.stringify(value));
};

describe('ConsulKvWriter', () => {
  test('lists keys, reads a value, writes and deletes with check-and-set', async () => {
    seen.length = 0;
    handler = json(200, ['rt/history/0000000001']);
    assert.deepEqual(await writer.keys('rt/history/'), ['rt/history/0000000001']);
    handler = json(200, [{ Key: 'rt/history/0000000001', Value: Buffer.from('{"a":1}').toString('base64'), ModifyIndex: 42, Flags: 0 }]);
    assert.deepEqual(await writer.get('rt/history/0000000001'), { value: '{"a":1}', modifyIndex: 42 });
    handler = json(200, true);
    assert.equal(await writer.set('rt/history/0000000002', 'entry', 0), true);
    handler = json(200, false);
    assert.equal(await writer.del('rt/history/0000000001', 42), false);
    assert.deepEqual(
      seen.map((s) => `${s.method} ${s.url}`),
      ['GET /v1/kv/rt/history/?keys&dc=dc2', 'GET /v1/kv/rt/history/0000000001?dc=dc2', 'PUT /v1/kv/rt/history/0000000002?cas=0&dc=dc2', 'DELETE /v1/kv/rt/history/0000000001?cas=42&dc=dc2'],
    );
    assert.ok(seen.every((s) => s.token === 'secret'), 'the token goes in a header, never the URL');
    assert.equal(seen[2]?.body, 'entry');
  });

  test('a missing prefix or key is empty, not an error', async () => {
    handler = (_req, _body, res) => res.writeHead(404, { 'x-consul-index': '7' }).end();
    assert.deepEqual(await writer.keys('rt/none/'), []);
    assert.equal(await writer.get('rt/none'), undefined);
  });

  const notConsul: { name: string; handler: Handler; call: () => Promise<unknown>; error: RegExp }[] = [
    { name: 'HTML instead of a key list', handler: (_q, _b, res) => res.writeHead(200, { 'content-type': 'text/html' }).end('<html>'), call: () => writer.keys('rt/'), error: /not JSON/ },
    { name: 'a key list of numbers', handler: json(200, [1, 2]), call: () => writer.keys('rt/'), error: /expected string/i },
    { name: 'an empty entry list', handler: json(200, []), call: () => writer.get('rt/x'), error: /too small|>=1/i },
    { name: 'a write answered with something else than true or false', handler: json(200, 'maybe'), call: () => writer.set('rt/x', 'v', 0), error: /not true or false/ },
    { name: 'an ACL refusal', handler: (_q, _b, res) => res.writeHead(403).end('Permission denied'), call: () => writer.set('rt/x', 'v', 0), error: /403.*Permission denied/ },
    { name: 'an answer larger than the bound', handler: (_q, _b, res) => res.writeHead(200).end(`[${'"x",'.repeat(1_200_000)}"x"]`), call: () => writer.keys('rt/'), error: /larger than/ },
  ];
  for (const c of notConsul) {
    test(`refused: ${c.name}`, async () => {
      handler = c.handler;
      await assert.rejects(c.call(), c.error);
    });
  }
});
