import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { fabioGlobOrder, globMatches, hostCaptures } from '../../src/core/host-glob.ts';
import { compileRouter } from '../../src/router/router.ts';

describe('globMatches: * is any run of characters, dots included (gobwas glob without separators)', () => {
  const cases: [string, string, boolean][] = [
    ['*.example.com', 'a.example.com', true],
    ['*.example.com', 'a.b.example.com', true],
    ['*.example.com', 'example.com', false],
    ['*.example.com', '.example.com', true],
    ['*.example.com', 'a.example.org', false],
    ['api-*.example.com', 'api-v2.example.com', true],
    ['api-*.example.com', 'web-v2.example.com', false],
    ['*.*.example.com', 'a.b.example.com', true],
    ['*.*.example.com', 'a.example.com', false],
    ['a*b*c.test', 'axxbyyc.test', true],
    ['a*b*c.test', 'axxbyy.test', false],
    ['x.test', 'x.test', true],
  ];
  for (const [pattern, host, expected] of cases) test(`${pattern} ~ ${host} → ${expected}`, () => assert.equal(globMatches(pattern, host), expected));

  test('many stars against a long non-matching host (a backtracking matcher would not finish)', () => {
    assert.equal(globMatches(`${'*a'.repeat(60)}.test`, 'a'.repeat(240)), false);
    assert.equal(globMatches(`${'*a'.repeat(60)}.test`, `${'a'.repeat(240)}.test`), true);
  });
});

describe("fabioGlobOrder: fabio's reverse-host order (route/table.go, issue 506)", () => {
  test('the more specific suffix first', () => {
    assert.deepEqual(['*.example.com', '*.a.example.com', '*.b.example.com'].sort(fabioGlobOrder), ['*.b.example.com', '*.a.example.com', '*.example.com']);
  });
  test('equal patterns compare equal', () => assert.equal(fabioGlobOrder('*.x', '*.x'), 0));
});

describe('router: exact host, then globs (most specific first), then host-less', () => {
  const route = (host: string | null, path: string) => ({ host, path, name: `${host ?? ''}${path}` });
  const router = compileRouter([
    route('*.example.com', '/'),
    route('*.api.example.com', '/'),
    route('www.api.example.com', '/v1'),
    route('*.example.com', '/only-glob'),
    route(null, '/'),
    route(null, '/fallback'),
  ]);
  const cases: [host: string, path: string, expected: string | undefined][] = [
    ['www.api.example.com', '/v1/x', 'www.api.example.com/v1'],
    // The exact host has no matching path: the globs are tried next, in fabio's order.
    ['www.api.example.com', '/other', '*.api.example.com/'],
    ['x.api.example.com', '/', '*.api.example.com/'],
    ['shop.example.com', '/', '*.example.com/'],
    ['Shop.Example.com:8080', '/only-glob/a', '*.example.com/only-glob'],
    ['a.b.c.example.com', '/', '*.example.com/'],
    ['example.com', '/fallback', '/fallback'],
    ['other.test', '/', '/'],
  ];
  for (const [host, path, expected] of cases) test(`${host}${path} → ${expected}`, () => assert.equal(router.match(host, path)?.name, expected));

  test('a host-less request never matches a glob', () => assert.equal(router.match(undefined, '/only-glob')?.name, '/'));

  test('many distinct Host headers do not grow the memory of glob matches without bound', () => {
    for (let i = 0; i < 20_000; i++) assert.equal(router.match(`h${i}.example.com`, '/')?.name, '*.example.com/');
  });

  test('a Host longer than any DNS name skips the globs', () => assert.equal(router.match(`${'a'.repeat(300)}.example.com`, '/')?.name, '/'));
});

describe('hostCaptures: would a claim take requests a guarded glob route served?', () => {
  const cases: [claim: string, guarded: string, expected: boolean][] = [
    ['a.example.com', '*.example.com', true],
    ['a.example.org', '*.example.com', false],
    ['*.a.example.com', '*.example.com', true],
    ['*.example.com', '*.a.example.com', false],
    ['*.example.org', '*.example.com', false],
    ['*.example.com', '*.example.com', false],
    ['a.example.com', 'a.example.com', false],
    ['*.example.com', 'a.example.com', false],
  ];
  for (const [claim, guarded, expected] of cases) test(`${claim} over ${guarded} → ${expected}`, () => assert.equal(hostCaptures(claim, guarded), expected));
});
