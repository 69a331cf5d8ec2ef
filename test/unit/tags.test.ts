import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { isPathPrefix, isUrlprefixTag, parseUrlprefixTag, type TagRoute } from '../../src/state/tags.ts';

describe('parseUrlprefixTag: accepted tags', () => {
  const cases: { tag: string; route: Omit<TagRoute, 'proto'> }[] = [
    { tag: 'urlprefix-/web', route: { host: null, path: '/web', strip: null } },
    { tag: 'urlprefix-/', route: { host: null, path: '/', strip: null } },
    { tag: 'urlprefix-/web/', route: { host: null, path: '/web', strip: null } },
    { tag: 'urlprefix-/a/b/c/', route: { host: null, path: '/a/b/c', strip: null } },
    { tag: 'urlprefix-//web//', route: { host: null, path: '/web', strip: null } },
    { tag: 'urlprefix-Example.COM:8080/api', route: { host: 'example.com', path: '/api', strip: null } },
    { tag: 'urlprefix-api.example.com/', route: { host: 'api.example.com', path: '/', strip: null } },
    { tag: 'urlprefix-localhost/x', route: { host: 'localhost', path: '/x', strip: null } },
    { tag: 'urlprefix-/api strip=/api', route: { host: null, path: '/api', strip: '/api' } },
    { tag: 'urlprefix-/api/v1 strip=/api', route: { host: null, path: '/api/v1', strip: '/api' } },
    { tag: 'urlprefix-/api/v1 strip=/api/', route: { host: null, path: '/api/v1', strip: '/api' } },
    { tag: 'urlprefix-example.com/api strip=/api', route: { host: 'example.com', path: '/api', strip: '/api' } },
    { tag: 'urlprefix-/web   ', route: { host: null, path: '/web', strip: null } },
  ];
  for (const { tag, route } of cases) {
    test(tag, () => {
      const parsed = parseUrlprefixTag(tag);
      assert.deepEqual(parsed, { ok: true, route: { ...route, proto: 'http' } });
    });
  }
});

describe('parseUrlprefixTag: rejected tags', () => {
  const cases: { name: string; tag: string; error: RegExp }[] = [
    { name: 'empty route', tag: 'urlprefix-', error: /empty route/ },
    { name: 'blank route', tag: 'urlprefix-   ', error: /empty route/ },
    { name: 'host without path', tag: 'urlprefix-example.com', error: /"example\.com" has no path/ },
    { name: 'bad host (underscore)', tag: 'urlprefix-bad_host/x', error: /"bad_host" is not a valid host name/ },
    { name: 'bad host (leading dash)', tag: 'urlprefix--bad.com/x', error: /is not a valid host name/ },
    { name: 'bad host (port only)', tag: 'urlprefix-:8080/x', error: /":8080" is not a valid host name/ },
    { name: 'bad host (empty label)', tag: 'urlprefix-a..b/x', error: /"a\.\.b" is not a valid host name/ },
    { name: '.. segment', tag: 'urlprefix-/a/../b', error: /"\/a\/\.\.\/b" contains a "\." or "\.\." segment/ },
    { name: 'trailing .. segment', tag: 'urlprefix-/a/..', error: /"\." or "\.\." segment/ },
    { name: '. segment', tag: 'urlprefix-/./a', error: /"\." or "\.\." segment/ },
    { name: 'disallowed characters', tag: 'urlprefix-/a<b>', error: /characters not allowed/ },
    { name: 'query in path', tag: 'urlprefix-/a?b=1', error: /characters not allowed/ },
    { name: 'strip not a prefix', tag: 'urlprefix-/api strip=/other', error: /strip=\/other is not a prefix of the route path \/api/ },
    { name: 'strip on a non-segment boundary', tag: 'urlprefix-/apiv2 strip=/api', error: /strip=\/api is not a prefix of the route path \/apiv2/ },
    { name: 'strip longer than path', tag: 'urlprefix-/api strip=/api/v1', error: /is not a prefix/ },
    { name: 'strip=/', tag: 'urlprefix-/api strip=/', error: /strip=\/ would strip nothing/ },
    { name: 'strip without value', tag: 'urlprefix-/api strip', error: /^strip: path "" must start with "\/"/ },
    { name: 'strip relative', tag: 'urlprefix-/api strip=api', error: /^strip: path "api" must start with "\/"/ },
    { name: 'strip with .. segment', tag: 'urlprefix-/api strip=/../api', error: /^strip: .*segment/ },
    { name: 'unknown option', tag: 'urlprefix-/api host=example.com', error: /unknown option "host"/ },
    { name: 'unknown flag option', tag: 'urlprefix-/api tlsskipverify', error: /unknown option "tlsskipverify"/ },
    { name: 'unknown option after a valid one', tag: 'urlprefix-/api strip=/api redirect=301', error: /unknown option "redirect"/ },
  ];
  for (const { name, tag, error } of cases) {
    test(`${name}: ${JSON.stringify(tag)}`, () => {
      const parsed = parseUrlprefixTag(tag);
      assert.equal(parsed.ok, false, `expected ${tag} to be rejected`);
      if (!parsed.ok) assert.match(parsed.error, error);
    });
  }

  test('unknown option message lists the supported options', () => {
    const parsed = parseUrlprefixTag('urlprefix-/x foo=bar');
    assert.equal(parsed.ok, false);
    if (!parsed.ok) assert.match(parsed.error, /supported: strip/);
  });
});

describe('isUrlprefixTag', () => {
  const cases: [string, boolean][] = [
    ['urlprefix-/web', true],
    ['urlprefix-', true],
    ['primary', false],
    ['v1', false],
    ['URLPREFIX-/web', false],
    [' urlprefix-/web', false],
  ];
  for (const [tag, expected] of cases) {
    test(`${JSON.stringify(tag)} → ${expected}`, () => assert.equal(isUrlprefixTag(tag), expected));
  }
});

describe('isPathPrefix: segment-boundary semantics', () => {
  const cases: [prefix: string, path: string, expected: boolean][] = [
    ['/web', '/web', true],
    ['/web', '/web/', true],
    ['/web', '/web/x', true],
    ['/web', '/web/x/y', true],
    ['/web', '/webx', false],
    ['/web', '/we', false],
    ['/web', '/', false],
    ['/web', '/other/web', false],
    ['/a/b', '/a/b/c', true],
    ['/a/b', '/a/bc', false],
    ['/a/b', '/a', false],
    ['/', '/', true],
    ['/', '/anything', true],
    ['/', '/a/b/c', true],
    ['/', '', false],
  ];
  for (const [prefix, path, expected] of cases) {
    test(`${prefix} vs ${JSON.stringify(path)} → ${expected}`, () => assert.equal(isPathPrefix(prefix, path), expected));
  }
});
