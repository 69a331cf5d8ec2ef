import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { FABIO_LIMITS, parseFabioLine, parseFabioValue, type FabioCommand } from '../../src/policy/fabio-routes.ts';

const add = (service: string, src: string, dst: string, more: Partial<Extract<FabioCommand, { cmd: 'add' }>> = {}): FabioCommand => ({
  cmd: 'add',
  service,
  src,
  dst,
  weight: 0,
  tags: [],
  opts: [],
  ...more,
});
const del = (service: string | null, src: string | null = null, dst: string | null = null, tags: string[] = []): FabioCommand => ({ cmd: 'del', service, src, dst, tags });
const weight = (service: string | null, src: string, w: number, tags: string[] = []): FabioCommand => ({ cmd: 'weight', service, src, weight: w, tags });

describe('parseFabioLine: every form fabio accepts', () => {
  const cases: { line: string; command: FabioCommand }[] = [
    // fabio's documentation, "Config Language" and "Traffic Shaping" examples
    { line: 'route add product-svc /product http://1.2.3.4:8000', command: add('product-svc', '/product', 'http://1.2.3.4:8000') },
    { line: 'route add svc /maint http://5.6.7.8:5000', command: add('svc', '/maint', 'http://5.6.7.8:5000') },
    { line: 'route add service-c www.somedomain.com/ http://host-z:12345/', command: add('service-c', 'www.somedomain.com/', 'http://host-z:12345/') },
    { line: 'route add service-a www.mp.dev/accounts/ http://host-a:11050/ tags "a,b"', command: add('service-a', 'www.mp.dev/accounts/', 'http://host-a:11050/', { tags: ['a', 'b'] }) },
    { line: 'route del product-svc', command: del('product-svc') },
    { line: 'route del product-svc /path', command: del('product-svc', '/path') },
    { line: 'route del product-svc /path http://1.2.3.4:8000', command: del('product-svc', '/path', 'http://1.2.3.4:8000') },
    { line: 'route del product-svc tags "green"', command: del('product-svc', null, null, ['green']) },
    { line: 'route del tags "yesterday"', command: del(null, null, null, ['yesterday']) },
    { line: 'route del service-b www.dba.dev/auth/', command: del('service-b', 'www.dba.dev/auth/') },
    { line: 'route weight product-svc /path weight .05 tags "green"', command: weight('product-svc', '/path', 0.05, ['green']) },
    { line: 'route weight /path weight .05 tags "lang=go"', command: weight(null, '/path', 0.05, ['lang=go']) },
    { line: 'route weight product-svc-go /path weight .05', command: weight('product-svc-go', '/path', 0.05) },
    { line: 'route weight service-b www.kjca.dev/auth/ weight 0.05 tags "version-15,dc-fra"', command: weight('service-b', 'www.kjca.dev/auth/', 0.05, ['version-15', 'dc-fra']) },
    { line: 'route weight vault vault.company.com weight 1.00 tags "active"', command: weight('vault', 'vault.company.com', 1, ['active']) },
    // every optional part of route add, in order
    { line: 'route add a /x http://h:1 weight 0.25', command: add('a', '/x', 'http://h:1', { weight: 0.25 }) },
    { line: 'route add a /x http://h:1 opts "strip=/x"', command: add('a', '/x', 'http://h:1', { opts: ['strip=/x'] }) },
    { line: 'route add a /x http://h:1 weight 1 tags "v1, v2" opts "strip=/x  host=dst"', command: add('a', '/x', 'http://h:1', { weight: 1, tags: ['v1', 'v2'], opts: ['strip=/x', 'host=dst'] }) },
    { line: 'route add a /x http://h:1 tags ""', command: add('a', '/x', 'http://h:1') },
    // whitespace: any run of blanks and tabs between words, trimmed ends, CRLF
    { line: '  route\tadd   a\t/x  http://h:1  ', command: add('a', '/x', 'http://h:1') },
    { line: 'route add a /x http://h:1\r', command: add('a', '/x', 'http://h:1') },
    // negative weights count as 0 (fabio: no fixed weighting); exponents parse
    { line: 'route weight a /x weight -1', command: weight('a', '/x', 0) },
    { line: 'route weight a /x weight 5e-2', command: weight('a', '/x', 0.05) },
    // names are words like any other, whatever they spell
    { line: 'route add __proto__ /p http://h:1 tags "constructor,__proto__"', command: add('__proto__', '/p', 'http://h:1', { tags: ['constructor', '__proto__'] }) },
    { line: 'route del constructor', command: del('constructor') },
    { line: 'route add svc /ü http://h:1 tags "grün"', command: add('svc', '/ü', 'http://h:1', { tags: ['grün'] }) },
  ];
  for (const { line, command } of cases) {
    test(JSON.stringify(line), () => {
      const parsed = parseFabioLine(line, 7);
      assert.deepEqual(parsed, { kind: 'command', line: 7, text: line.trim(), command });
    });
  }
});

describe('parseFabioLine: comments and blank lines', () => {
  for (const line of ['', '   ', '\t', '\r', '# a comment', '  # indented', '// also a comment', '#route add a /x http://h:1']) {
    test(JSON.stringify(line), () => assert.equal(parseFabioLine(line, 1), null));
  }
});

describe('parseFabioLine: refused lines', () => {
  const cases: { line: string; error: RegExp }[] = [
    { line: 'hello', error: /syntax error: expected "route add", "route del" or "route weight"/ },
    { line: 'route', error: /syntax error: expected "route add"/ },
    { line: 'route list', error: /syntax error: expected "route add"/ },
    { line: 'ROUTE ADD a /x http://h:1', error: /syntax error/ },
    { line: 'route addx a /x http://h:1', error: /syntax error: expected "route add"/ },
    { line: 'route add a /x', error: /expected route add <svc> <src> <dst>/ },
    { line: 'route add a /x http://h:1 extra', error: /expected route add/ },
    { line: 'route add a /x http://h:1 weight', error: /expected route add/ },
    { line: 'route add a /x http://h:1 weight abc', error: /weight "abc" is not a number/ },
    { line: 'route add a /x http://h:1 weight 0x10', error: /weight "0x10" is not a number/ },
    { line: 'route add a /x http://h:1 weight NaN', error: /not a number/ },
    { line: 'route add a /x http://h:1 weight 1e999', error: /out of range/ },
    { line: 'route add a /x http://h:1 tags "a,,b"', error: /has an empty entry/ },
    { line: 'route add a /x http://h:1 tags "a', error: /expected route add/ },
    { line: 'route add a /x http://h:1 opts "strip=/x" tags "a"', error: /expected route add/ },
    { line: 'route del', error: /expected route del/ },
    { line: 'route del a /x http://h:1 more', error: /expected route del/ },
    { line: 'route del tags ""', error: /no tags given/ },
    { line: 'route del a tags ""', error: /no tags given/ },
    { line: 'route weight a /x', error: /expected route weight/ },
    { line: 'route weight a /x weight', error: /expected route weight/ },
    { line: 'route weight /x weight 0.5', error: /expected route weight/ },
    { line: 'route weight /x weight 0.5 tags ""', error: /no tags given/ },
    { line: 'route weight a /x weight ten', error: /weight "ten" is not a number/ },
    { line: `route add a /x http://h:1 tags "${Array.from({ length: FABIO_LIMITS.maxTags + 1 }, (_, i) => `t${i}`).join(',')}"`, error: /more than 64 tags/ },
    { line: `route add a /${'x'.repeat(FABIO_LIMITS.maxLineChars)} http://h:1`, error: /longer than 4096 characters/ },
  ];
  for (const { line, error } of cases) {
    test(JSON.stringify(line.length > 80 ? `${line.slice(0, 77)}...` : line), () => {
      const parsed = parseFabioLine(line, 3);
      assert.ok(parsed && parsed.kind === 'error', `expected ${line} to be refused`);
      assert.equal(parsed.line, 3);
      assert.match(parsed.error, error);
    });
  }
});

describe('parseFabioValue', () => {
  test('numbers lines from 1, counting blanks and comments, and keeps the good lines around a bad one', () => {
    const parsed = parseFabioValue('# overrides\r\nroute add a /a http://h:1\r\n\r\nroute bogus\r\nroute del b\n');
    assert.ok(parsed.ok);
    assert.deepEqual(
      parsed.lines.map((l) => [l.line, l.kind]),
      [
        [2, 'command'],
        [4, 'error'],
        [5, 'command'],
      ],
    );
  });

  test('an empty value has no lines', () => {
    assert.deepEqual(parseFabioValue(''), { ok: true, lines: [] });
  });

  test('a value over the size cap is refused as a whole', () => {
    const parsed = parseFabioValue('# x\n'.repeat(FABIO_LIMITS.maxValueBytes / 4 + 1));
    assert.equal(parsed.ok, false);
    if (!parsed.ok) assert.match(parsed.error, /larger than 262144 bytes/);
  });

  test('multi-byte characters count as bytes against the cap', () => {
    const parsed = parseFabioValue(`#${'é'.repeat(FABIO_LIMITS.maxValueBytes / 2)}`);
    assert.equal(parsed.ok, false);
  });

  test('a value over the line cap is refused as a whole', () => {
    const parsed = parseFabioValue('\n'.repeat(FABIO_LIMITS.maxLines));
    assert.equal(parsed.ok, false);
    if (!parsed.ok) assert.match(parsed.error, /more than 5000 lines/);
  });

  test('a value at the line cap is read', () => {
    const parsed = parseFabioValue(`${'route del a\n'.repeat(FABIO_LIMITS.maxLines - 1)}`);
    assert.ok(parsed.ok);
    if (parsed.ok) assert.equal(parsed.lines.length, FABIO_LIMITS.maxLines - 1);
  });
});
