import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { isPathPrefix, isUrlprefixTag, parseUrlprefixTag, type TagRoute } from '../../src/state/tags.ts';
import { DEFAULT_ROUTE_OPTIONS } from '../../src/state/route-options.ts';

describe('parseUrlprefixTag: accepted tags', () => {
  const cases: { tag: string; route: TagRoute }[] = [
    { tag: 'urlprefix-/web', route: { ...DEFAULT_ROUTE_OPTIONS, host: null, path: '/web', strip: null } },
    { tag: 'urlprefix-/', route: { ...DEFAULT_ROUTE_OPTIONS, host: null, path: '/', strip: null } },
    { tag: 'urlprefix-/web/', route: { ...DEFAULT_ROUTE_OPTIONS, host: null, path: '/web', strip: null } },
    { tag: 'urlprefix-/a/b/c/', route: { ...DEFAULT_ROUTE_OPTIONS, host: null, path: '/a/b/c', strip: null } },
    { tag: 'urlprefix-//web//', route: { ...DEFAULT_ROUTE_OPTIONS, host: null, path: '/web', strip: null } },
    { tag: 'urlprefix-Example.COM:8080/api', route: { ...DEFAULT_ROUTE_OPTIONS, host: 'example.com', path: '/api', strip: null } },
    { tag: 'urlprefix-api.example.com/', route: { ...DEFAULT_ROUTE_OPTIONS, host: 'api.example.com', path: '/', strip: null } },
    { tag: 'urlprefix-localhost/x', route: { ...DEFAULT_ROUTE_OPTIONS, host: 'localhost', path: '/x', strip: null } },
    { tag: 'urlprefix-/api strip=/api', route: { ...DEFAULT_ROUTE_OPTIONS, host: null, path: '/api', strip: '/api' } },
    { tag: 'urlprefix-/api/v1 strip=/api', route: { ...DEFAULT_ROUTE_OPTIONS, host: null, path: '/api/v1', strip: '/api' } },
    { tag: 'urlprefix-/api/v1 strip=/api/', route: { ...DEFAULT_ROUTE_OPTIONS, host: null, path: '/api/v1', strip: '/api' } },
    { tag: 'urlprefix-example.com/api strip=/api', route: { ...DEFAULT_ROUTE_OPTIONS, host: 'example.com', path: '/api', strip: '/api' } },
    { tag: 'urlprefix-/web   ', route: { ...DEFAULT_ROUTE_OPTIONS, host: null, path: '/web', strip: null } },
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
    { name: 'unknown option', tag: 'urlprefix-/api pxyproto=true', error: /unknown option "pxyproto"/ },
    { name: 'option without a value', tag: 'urlprefix-/api tlsskipverify', error: /tlsskipverify must be true or false/ },
    { name: 'unknown option after a valid one', tag: 'urlprefix-/api strip=/api weight=0.5', error: /unknown option "weight"/ },
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
    // fabio trims tags first (routecmd.go), and such tags are seen in real registrations.
    [' urlprefix-/web', true],
    ['\turlprefix-/web', true],
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

describe('parseUrlprefixTag: fabio forms', () => {
  const dc1 = { datacenter: 'dc1' };
  const cases: { tag: string; env?: { datacenter: string | null }; route: Partial<TagRoute> }[] = [
    { tag: ' urlprefix-/x', route: { host: null, path: '/x' } },
    { tag: '  urlprefix-/x strip=/x  ', route: { host: null, path: '/x', strip: '/x' } },
    { tag: 'urlprefix-/svc/$DC', env: dc1, route: { host: null, path: '/svc/dc1' } },
    { tag: 'urlprefix-/svc/${DC}/x', env: dc1, route: { host: null, path: '/svc/dc1/x' } },
    { tag: 'urlprefix-$DC.example.com/', env: { datacenter: 'EU-West' }, route: { host: 'eu-west.example.com', path: '/' } },
    { tag: 'urlprefix-/a/$DC/$DC/${DC}', env: dc1, route: { host: null, path: '/a/dc1/dc1/dc1' } },
    { tag: 'urlprefix-*.example.com/', route: { host: '*.example.com', path: '/' } },
    { tag: 'urlprefix-*.Example.com:443/api', route: { host: '*.example.com', path: '/api' } },
    { tag: 'urlprefix-api-*.example.com/', route: { host: 'api-*.example.com', path: '/' } },
    { tag: 'urlprefix-*.*.example.com/', route: { host: '*.*.example.com', path: '/' } },
    { tag: 'urlprefix-/api strip=/api prepend=/v2 host=dst', route: { host: null, path: '/api', strip: '/api', prepend: '/v2', upstreamHost: 'dst' } },
    { tag: 'urlprefix-/ redirect=301,https://www.foo.com$path', route: { host: null, path: '/', redirect: { code: 301, url: 'https://www.foo.com$path' } } },
  ];
  for (const { tag, env, route } of cases) {
    test(JSON.stringify(tag), () => {
      assert.deepEqual(parseUrlprefixTag(tag, env), { ok: true, route: { ...DEFAULT_ROUTE_OPTIONS, ...route } });
    });
  }

  const refused: { name: string; tag: string; env?: { datacenter: string | null }; error: RegExp }[] = [
    { name: '$DC unknown yet', tag: 'urlprefix-/svc/$DC', env: { datacenter: null }, error: /\$DC: the datacenter .* is not known yet/ },
    { name: 'another variable', tag: 'urlprefix-/svc/$HOME', env: { datacenter: 'dc1' }, error: /unknown variable \$HOME: only \$DC/ },
    { name: '$DCX is another variable', tag: 'urlprefix-/svc/$DCX', env: { datacenter: 'dc1' }, error: /unknown variable \$DCX/ },
    { name: 'unclosed ${DC', tag: 'urlprefix-/svc/${DC', env: { datacenter: 'dc1' }, error: /unknown variable/ },
    { name: 'bare $', tag: 'urlprefix-/svc/$', env: { datacenter: 'dc1' }, error: /unknown variable \$/ },
    { name: 'glob that names no domain', tag: 'urlprefix-*/', error: /names no domain/ },
    { name: 'glob *.*.*', tag: 'urlprefix-*.*.*/', error: /names no domain/ },
    { name: 'glob **', tag: 'urlprefix-**.example.com/', error: /write \* once/ },
    { name: 'glob ?', tag: 'urlprefix-a?.example.com/', error: /is not a valid host name or host glob \(only \* is supported\)/ },
    { name: 'glob [ab]', tag: 'urlprefix-[ab].example.com/', error: /host glob/ },
    { name: 'glob {a,b}', tag: 'urlprefix-{a,b}.example.com/', error: /host glob/ },
    { name: 'huge tag', tag: `urlprefix-/x${'/y'.repeat(3000)}`, error: /tag is 6012 characters; at most 4096/ },
    { name: 'a bad option refuses the tag', tag: 'urlprefix-/x proto=tcp', error: /TCP routes are not supported/ },
  ];
  for (const { name, tag, env, error } of refused) {
    test(`refused: ${name}`, () => {
      const parsed = parseUrlprefixTag(tag, env);
      assert.equal(parsed.ok, false);
      if (!parsed.ok) {
        assert.match(parsed.error, error);
        assert.ok(parsed.error.length < 400);
      }
    });
  }
});
