/**
 * gRPC through the gateway with a real grpc-js server and client: a service tagged
 * `proto=grpc` is forwarded over HTTP/2 (h2c to the instance); unary and server-streaming calls,
 * metadata and trailers arrive intact, an error status passes through, grpc-timeout is a deadline
 * the gateway enforces (DEADLINE_EXCEEDED), the gateway's own refusals are gRPC statuses
 * (UNAVAILABLE with no healthy instance, UNIMPLEMENTED for no route), statuses are counted, a
 * malformed grpc-timeout is refused, and a Consul change still applies afterwards. Clients reach
 * the gateway over h2c (--h2c) and over TLS (ALPN h2).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect as http2Connect } from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { startConsul, type ConsulAgent } from '../helpers/consul.ts';
import { startGateway, waitFor, type GatewayProcess } from '../helpers/gateway.ts';
import { freePorts } from '../helpers/ports.ts';
import * as pem from '../helpers/tls-certs.ts';

const PROTO = `
syntax = "proto3";
package helloworld;
service Greeter {
  rpc SayHello (HelloRequest) returns (HelloReply) {}
  rpc SayError (HelloRequest) returns (HelloReply) {}
  rpc SaySlowly (HelloRequest) returns (HelloReply) {}
  rpc SayMany (HelloRequest) returns (stream HelloReply) {}
}
message HelloRequest { string name = 1; int32 count = 2; }
message HelloReply { string message = 1; }
`;

type Callback = (err: grpc.ServiceError | null, reply?: { message: string }) => void;
interface GreeterClient extends grpc.Client {
  SayHello(req: { name: string }, metadata: grpc.Metadata, options: grpc.CallOptions, cb: Callback): grpc.ClientUnaryCall;
  SayError(req: { name: string }, metadata: grpc.Metadata, options: grpc.CallOptions, cb: Callback): grpc.ClientUnaryCall;
  SaySlowly(req: { name: string }, metadata: grpc.Metadata, options: grpc.CallOptions, cb: Callback): grpc.ClientUnaryCall;
  SayMany(req: { name: string; count: number }, metadata?: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientReadableStream<{ message: string }>;
}
type GreeterConstructor = new (address: string, credentials: grpc.ChannelCredentials, options?: grpc.ClientOptions) => GreeterClient;

let consul: ConsulAgent;
let gw: GatewayProcess;
let dir: string;
let server: grpc.Server;
let grpcPort: number;
let tlsPort: number;
let Greeter: GreeterConstructor;
let serviceDefinition: grpc.ServiceDefinition;
let calls = 0;
const clients: GreeterClient[] = [];

function client(address: string, credentials = grpc.credentials.createInsecure()): GreeterClient {
  // No retries and no waiting for a ready channel on the client side: what the gateway answers is what we see.
  const c = new Greeter(address, credentials, { 'grpc.enable_retries': 0 });
  clients.push(c);
  return c;
}

function unary(c: GreeterClient, method: 'SayHello' | 'SayError' | 'SaySlowly', name: string, options: grpc.CallOptions = {}, metadata = new grpc.Metadata()) {
  return new Promise<{ err: grpc.ServiceError | null; reply?: { message: string }; headers: grpc.Metadata | null; status: grpc.StatusObject | null }>((resolve) => {
    let headers: grpc.Metadata | null = null;
    let status: grpc.StatusObject | null = null;
    let reply: { message: string } | undefined;
    let error: grpc.ServiceError | null = null;
    let pending = 2;
    const done = (): void => {
      if (--pending === 0) resolve({ err: error, reply, headers, status });
    };
    const call = c[method]({ name }, metadata, { deadline: Date.now() + 15_000, ...options }, (err, r) => {
      error = err;
      reply = r;
      done();
    });
    call.on('metadata', (m: grpc.Metadata) => (headers = m));
    call.on('status', (s: grpc.StatusObject) => {
      status = s;
      done();
    });
  });
}

async function metric(pattern: RegExp): Promise<number> {
  const text = await (await fetch(`${gw.adminUrl}/metrics`)).text();
  let sum = 0;
  for (const line of text.split('\n')) if (pattern.test(line)) sum += Number(line.split(' ').at(-1));
  return sum;
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cgw-grpc-'));
  await writeFile(join(dir, 'hello.proto'), PROTO);
  await writeFile(join(dir, 'default.crt'), pem.DEFAULT_CERT);
  await writeFile(join(dir, 'default.key'), pem.DEFAULT_KEY);
  const definition = protoLoader.loadSync(join(dir, 'hello.proto'));
  const loaded = grpc.loadPackageDefinition(definition) as unknown as { helloworld: { Greeter: GreeterConstructor & { service: grpc.ServiceDefinition } } };
  Greeter = loaded.helloworld.Greeter;
  serviceDefinition = loaded.helloworld.Greeter.service;
  server = new grpc.Server();
  server.addService(serviceDefinition, {
    SayHello: (call: grpc.ServerUnaryCall<{ name: string }, unknown>, cb: grpc.sendUnaryData<{ message: string }>) => {
      calls += 1;
      const initial = new grpc.Metadata();
      initial.set('x-initial', 'hello-header');
      initial.set('x-client-meta', String(call.metadata.get('x-client-meta')[0] ?? ''));
      call.sendMetadata(initial);
      const trailer = new grpc.Metadata();
      trailer.set('x-trailer', 'bye');
      trailer.set('x-trailer-bin', Buffer.from([0, 1, 2, 255]));
      cb(null, { message: `hello ${call.request.name}` }, trailer);
    },
    SayError: (_call: unknown, cb: grpc.sendUnaryData<unknown>) => {
      calls += 1;
      cb({ code: grpc.status.NOT_FOUND, details: 'no such greeting: ünïcode' });
    },
    SaySlowly: (call: grpc.ServerUnaryCall<{ name: string }, unknown>, cb: grpc.sendUnaryData<{ message: string }>) => {
      calls += 1;
      const timer = setTimeout(() => cb(null, { message: 'late' }), 5_000);
      call.on('cancelled', () => clearTimeout(timer));
    },
    SayMany: (call: grpc.ServerWritableStream<{ name: string; count: number }, { message: string }>) => {
      calls += 1;
      for (let i = 0; i < call.request.count; i++) call.write({ message: `${call.request.name} #${i}` });
      const trailer = new grpc.Metadata();
      trailer.set('x-sent', String(call.request.count));
      call.end(trailer);
    },
  });
  grpcPort = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))),
  );
  consul = await startConsul();
  await consul.register({ id: 'greeter-1', name: 'greeter', port: grpcPort, tags: ['urlprefix-/helloworld.Greeter proto=grpc'] });
  [tlsPort] = (await freePorts(1)) as [number];
  gw = await startGateway({
    consul: consul.addr,
    // The grpcs instance below presents the test certificate; the gateway trusts it as a CA.
    env: { NODE_EXTRA_CA_CERTS: join(dir, 'default.crt') },
    args: ['--h2c', '--listen-tls', `127.0.0.1:${tlsPort}`, '--tls-cert', join(dir, 'default.crt'), '--tls-key', join(dir, 'default.key')],
  });
  const c = client(`127.0.0.1:${gw.listenPort}`);
  await waitFor(async () => ((await unary(c, 'SayHello', 'ready')).err === null ? true : undefined), { timeoutMs: 20_000, message: 'gRPC route served' });
});

after(async () => {
  for (const c of clients) c.close();
  await gw?.kill();
  await new Promise<void>((resolve) => server?.tryShutdown(() => resolve()));
  await consul?.stop();
  await rm(dir, { recursive: true, force: true });
});

test('a unary call passes through over h2c: reply, initial metadata, trailers (text and binary)', async () => {
  const meta = new grpc.Metadata();
  meta.set('x-client-meta', 'from-client');
  const answer = await unary(client(`127.0.0.1:${gw.listenPort}`), 'SayHello', 'world', {}, meta);
  assert.equal(answer.err, null);
  assert.equal(answer.reply?.message, 'hello world');
  assert.equal(answer.headers?.get('x-initial')[0], 'hello-header');
  assert.equal(answer.headers?.get('x-client-meta')[0], 'from-client');
  assert.equal(answer.status?.code, grpc.status.OK);
  assert.equal(answer.status?.metadata.get('x-trailer')[0], 'bye');
  assert.deepEqual(answer.status?.metadata.get('x-trailer-bin')[0], Buffer.from([0, 1, 2, 255]));
});

test('the same call over TLS (ALPN h2)', async () => {
  const credentials = grpc.credentials.createSsl(Buffer.from(pem.DEFAULT_CERT));
  const answer = await unary(client(`127.0.0.1:${tlsPort}`, credentials), 'SayHello', 'tls');
  assert.equal(answer.err, null);
  assert.equal(answer.reply?.message, 'hello tls');
  assert.equal(answer.status?.metadata.get('x-trailer')[0], 'bye');
});

test('a server-streaming call delivers every message and its trailers', async () => {
  const stream = client(`127.0.0.1:${gw.listenPort}`).SayMany({ name: 'n', count: 200 }, new grpc.Metadata(), { deadline: Date.now() + 15_000 });
  const messages: string[] = [];
  const status = await new Promise<grpc.StatusObject>((resolve, reject) => {
    stream.on('data', (m: { message: string }) => messages.push(m.message));
    stream.on('status', resolve);
    stream.on('error', (err: grpc.ServiceError) => (err.code === grpc.status.OK ? undefined : reject(err)));
  });
  assert.equal(status.code, grpc.status.OK);
  assert.equal(messages.length, 200);
  assert.equal(messages[199], 'n #199');
  assert.equal(status.metadata.get('x-sent')[0], '200');
});

test('an error status from the server (a trailers-only answer) reaches the client intact', async () => {
  const answer = await unary(client(`127.0.0.1:${gw.listenPort}`), 'SayError', 'x');
  assert.equal(answer.err?.code, grpc.status.NOT_FOUND);
  assert.equal(answer.err?.details, 'no such greeting: ünïcode');
});

test('grpc-timeout is a deadline: the gateway cuts the upstream attempt and answers DEADLINE_EXCEEDED', async () => {
  const started = Date.now();
  // The client's own deadline is later, so the gateway's answer is what ends the call.
  const meta = new grpc.Metadata();
  const c = client(`127.0.0.1:${gw.listenPort}`);
  const raw = await new Promise<{ status: string | undefined; message: string | undefined }>((resolve, reject) => {
    // A raw HTTP/2 call with grpc-timeout 300m (300 ms) and no client-side deadline at all.
    const session = http2Connect(`http://127.0.0.1:${gw.listenPort}`);
    session.on('error', reject);
    const req = session.request({ ':method': 'POST', ':path': '/helloworld.Greeter/SaySlowly', 'content-type': 'application/grpc', te: 'trailers', 'grpc-timeout': '300m' });
    req.on('trailers', (t) => {
      resolve({ status: t['grpc-status'] as string | undefined, message: t['grpc-message'] as string | undefined });
      session.close();
    });
    req.on('error', reject);
    req.resume();
    // One empty message: flag 0, length 0.
    req.end(Buffer.from([0, 0, 0, 0, 0]));
  });
  assert.equal(raw.status, String(grpc.status.DEADLINE_EXCEEDED));
  assert.match(raw.message ?? '', /deadline/);
  assert.ok(Date.now() - started < 4_500, 'answered at the deadline, not when the upstream finished');
  // grpc-js sends its own deadline as grpc-timeout, and sees the same status.
  const viaClient = await unary(c, 'SaySlowly', 'slow', { deadline: Date.now() + 500 }, meta);
  assert.equal(viaClient.err?.code, grpc.status.DEADLINE_EXCEEDED);
});

test('a malformed grpc-timeout is refused as a gRPC error, never forwarded', async () => {
  const before = calls;
  for (const value of ['abc', '123456789S', '10x', '', '-1S', '__proto__']) {
    const status = await new Promise<string | undefined>((resolve, reject) => {
      const session = http2Connect(`http://127.0.0.1:${gw.listenPort}`);
      session.on('error', reject);
      const req = session.request({ ':method': 'POST', ':path': '/helloworld.Greeter/SayHello', 'content-type': 'application/grpc', 'grpc-timeout': value });
      req.on('trailers', (t) => {
        resolve(t['grpc-status'] as string | undefined);
        session.close();
      });
      req.on('error', reject);
      req.resume();
      req.end(Buffer.from([0, 0, 0, 0, 0]));
    });
    assert.equal(status, String(grpc.status.INTERNAL), `grpc-timeout ${JSON.stringify(value)}`);
  }
  assert.equal(calls, before, 'none reached the server');
});

test('gateway refusals are gRPC statuses: UNIMPLEMENTED for no route, UNAVAILABLE with no healthy instance', async () => {
  const c = client(`127.0.0.1:${gw.listenPort}`);
  // A service no route matches.
  const Other = grpc.makeGenericClientConstructor({}, 'Other');
  const other = new Other(`127.0.0.1:${gw.listenPort}`, grpc.credentials.createInsecure());
  const unrouted = await new Promise<grpc.ServiceError | null>((resolve) => {
    other.makeUnaryRequest('/nothere.Svc/Call', (x: Buffer) => x, (x: Buffer) => x, Buffer.alloc(0), (err) => resolve(err));
  });
  other.close();
  assert.equal(unrouted?.code, grpc.status.UNIMPLEMENTED);
  await consul.setCheck('greeter-1', 'critical');
  try {
    await waitFor(async () => ((await unary(c, 'SayHello', 'x')).err?.code === grpc.status.UNAVAILABLE ? true : undefined), { timeoutMs: 20_000, message: 'UNAVAILABLE with no healthy instance' });
  } finally {
    await consul.setCheck('greeter-1', 'passing');
  }
  await waitFor(async () => ((await unary(c, 'SayHello', 'back')).err === null ? true : undefined), { timeoutMs: 20_000, message: 'served again' });
});

test('proto=grpcs: the gateway dials the instance over TLS (h2 by ALPN), verifying its certificate', async () => {
  const secure = new grpc.Server();
  secure.addService(serviceDefinition, {
    SayHello: (call: grpc.ServerUnaryCall<{ name: string }, unknown>, cb: grpc.sendUnaryData<{ message: string }>) => {
      const trailer = new grpc.Metadata();
      trailer.set('x-over', 'tls');
      cb(null, { message: `secure ${call.request.name}` }, trailer);
    },
  });
  const credentials = grpc.ServerCredentials.createSsl(null, [{ cert_chain: Buffer.from(pem.DEFAULT_CERT), private_key: Buffer.from(pem.DEFAULT_KEY) }]);
  const port = await new Promise<number>((resolve, reject) => secure.bindAsync('127.0.0.1:0', credentials, (err, p) => (err ? reject(err) : resolve(p))));
  try {
    // A route of its own (host-scoped), so the plain greeter's route stays as it is.
    await consul.register({ id: 'greeter-tls-1', name: 'greeter-tls', port, tags: ['urlprefix-secure.test/helloworld.Greeter proto=grpcs'] });
    const c = new Greeter(`127.0.0.1:${gw.listenPort}`, grpc.credentials.createInsecure(), { 'grpc.default_authority': 'secure.test' });
    clients.push(c);
    const answer = await waitFor(async () => {
      const a = await unary(c, 'SayHello', 'x');
      return a.err === null ? a : undefined;
    }, { timeoutMs: 20_000, message: 'grpcs route served' });
    assert.equal(answer.reply?.message, 'secure x');
    assert.equal(answer.status?.metadata.get('x-over')[0], 'tls');
  } finally {
    await consul.deregister('greeter-tls-1');
    secure.forceShutdown();
  }
});

test('gRPC statuses are counted per route; a Consul change still applies (a second instance is used)', async () => {
  assert.ok((await metric(/^cgw_grpc_responses_total\{route="\/helloworld\.Greeter",service="greeter",grpc_status="0"\}/)) >= 3);
  assert.ok((await metric(/^cgw_grpc_responses_total\{route="\/helloworld\.Greeter",service="greeter",grpc_status="5"\}/)) >= 1);
  assert.ok((await metric(/^cgw_grpc_responses_total\{route="\/helloworld\.Greeter",service="greeter",grpc_status="4"\}/)) >= 1);
  assert.ok((await metric(/^cgw_grpc_responses_total\{route="\/helloworld\.Greeter",service="greeter",grpc_status="14"\}/)) >= 1);
  const second = new grpc.Server();
  let secondCalls = 0;
  second.addService(serviceDefinition, {
    SayHello: (_call: unknown, cb: grpc.sendUnaryData<{ message: string }>) => {
      secondCalls += 1;
      cb(null, { message: 'from second' });
    },
  });
  const port = await new Promise<number>((resolve, reject) => second.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  try {
    await consul.register({ id: 'greeter-2', name: 'greeter', port, tags: ['urlprefix-/helloworld.Greeter proto=grpc'] });
    const c = client(`127.0.0.1:${gw.listenPort}`);
    await waitFor(async () => {
      await unary(c, 'SayHello', 'x');
      return secondCalls > 0 ? true : undefined;
    }, { timeoutMs: 20_000, message: 'the new instance takes calls' });
  } finally {
    await consul.deregister('greeter-2');
    await new Promise<void>((resolve) => second.tryShutdown(() => resolve()));
  }
});
