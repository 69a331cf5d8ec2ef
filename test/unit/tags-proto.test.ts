import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { parseProtoOption, parseUrlprefixTag } from '../../src/state/tags.ts';

describe('urlprefix tags: proto= says how instances are dialled', () => {
  const accepted: { tag: string; proto: string }[] = [
    { tag: 'urlprefix-/svc', proto: 'http' },
    { tag: 'urlprefix-/svc proto=http', proto: 'http' },
    { tag: 'urlprefix-/svc proto=https', proto: 'https' },
    { tag: 'urlprefix-/helloworld.Greeter proto=grpc', proto: 'grpc' },
    { tag: 'urlprefix-/helloworld.Greeter proto=grpcs', proto: 'grpcs' },
    { tag: 'urlprefix-/api/v1 strip=/api proto=grpc', proto: 'grpc' },
  ];
  for (const { tag, proto } of accepted) {
    test(tag, () => {
      const parsed = parseUrlprefixTag(tag);
      assert.ok(parsed.ok, JSON.stringify(parsed));
      assert.equal(parsed.route.proto, proto);
    });
  }

  const rejected = ['proto=', 'proto=h2', 'proto=GRPC', 'proto=tcp', 'proto=__proto__', 'proto=constructor', 'proto=grpc,https', `proto=${'x'.repeat(10_000)}`];
  for (const option of rejected) {
    test(`${option.slice(0, 30)} is refused with the values allowed`, () => {
      const parsed = parseUrlprefixTag(`urlprefix-/svc ${option}`);
      assert.equal(parsed.ok, false);
      if (!parsed.ok) {
        assert.match(parsed.error, /proto: .* is not one of http, https, grpc, grpcs/);
        assert.ok(parsed.error.length < 200, 'the error does not echo a huge value');
      }
    });
  }

  test('parseProtoOption alone', () => {
    assert.deepEqual(parseProtoOption('grpc'), { ok: true, proto: 'grpc' });
    assert.equal(parseProtoOption('toString').ok, false);
  });
});
