import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_ROUTE_OPTIONS, parseProto, parseRouteOptions, type RouteOptions } from '../../src/state/route-options.ts';

const words = (text: string): string[] => text.split(' ').filter((w) => w !== '');

describe('parseRouteOptions: accepted (fabio examples and forms)', () => {
  const cases: { opts: string; path?: string; expect: Partial<RouteOptions> }[] = [
    { opts: '', expect: {} },
    { opts: 'strip=/api', path: '/api/v1', expect: { strip: '/api' } },
    { opts: 'prepend=/v2', expect: { prepend: '/v2' } },
    { opts: 'prepend=/v2/', expect: { prepend: '/v2' } },
    { opts: 'strip=/foo prepend=/bar', path: '/foo', expect: { strip: '/foo', prepend: '/bar' } },
    { opts: 'host=internal.example', expect: { upstreamHost: 'internal.example' } },
    { opts: 'host=Internal.Example:8443', expect: { upstreamHost: 'internal.example:8443' } },
    { opts: 'host=dst', expect: { upstreamHost: 'dst' } },
    { opts: 'host=10.1.2.3', expect: { upstreamHost: '10.1.2.3' } },
    // fabio docs: "urlprefix-/ redirect=301,https://www.foo.com$path"
    { opts: 'redirect=301,https://www.foo.com$path', expect: { redirect: { code: 301, url: 'https://www.foo.com$path' } } },
    { opts: 'redirect=302,https://x.example/new/$path', expect: { redirect: { code: 302, url: 'https://x.example/new/$path' } } },
    { opts: 'redirect=303,http://x.example/', expect: { redirect: { code: 303, url: 'http://x.example/' } } },
    { opts: 'redirect=307,/elsewhere$path', expect: { redirect: { code: 307, url: '/elsewhere$path' } } },
    { opts: 'redirect=308,https://x.example/a?b=c', expect: { redirect: { code: 308, url: 'https://x.example/a?b=c' } } },
    // fabio docs: allow=ip:10.0.0.0/8,ip:fe80::/10
    { opts: 'allow=ip:10.0.0.0/8,ip:fe80::/10', expect: { access: { kind: 'allow', cidrs: ['10.0.0.0/8', 'fe80::/10'] } } },
    { opts: 'deny=ip:1.2.3.4', expect: { access: { kind: 'deny', cidrs: ['1.2.3.4/32'] } } },
    { opts: 'deny=ip:10.1.2.3/8,IP:::1', expect: { access: { kind: 'deny', cidrs: ['10.0.0.0/8', '::1/128'] } } },
    { opts: 'allow=ip:2001:db8:0:0:1::/64', expect: { access: { kind: 'allow', cidrs: ['2001:db8::/64'] } } },
    { opts: 'allow=ip:0.0.0.0/0', expect: { access: { kind: 'allow', cidrs: ['0.0.0.0/0'] } } },
    { opts: 'proto=http', expect: { proto: 'http' } },
    { opts: 'proto=https', expect: { proto: 'https' } },
    { opts: 'proto=https tlsskipverify=true', expect: { proto: 'https', tlsSkipVerify: true } },
    { opts: 'proto=https tlsskipverify=false', expect: { proto: 'https', tlsSkipVerify: false } },
    { opts: 'proto=grpc', expect: { proto: 'grpc' } },
    { opts: 'proto=grpcs tlsskipverify=true', expect: { proto: 'grpcs', tlsSkipVerify: true } },
    { opts: 'proto=https host=api.internal tlsskipverify=true strip=/x', path: '/x', expect: { proto: 'https', upstreamHost: 'api.internal', tlsSkipVerify: true, strip: '/x' } },
  ];
  for (const { opts, path, expect } of cases) {
    test(JSON.stringify(opts), () => {
      assert.deepEqual(parseRouteOptions(words(opts), path), { ok: true, options: { ...DEFAULT_ROUTE_OPTIONS, ...expect } });
    });
  }
});

describe('parseRouteOptions: refused, each with its reason', () => {
  const cases: { name: string; opts: string[]; path?: string; error: RegExp }[] = [
    { name: 'unknown option', opts: ['weight=0.5'], error: /unknown option "weight" \(supported: strip, prepend, host, redirect, allow, deny, proto, tlsskipverify, redirect-https\)/ },
    { name: '__proto__ as a name', opts: ['__proto__=1'], error: /unknown option "__proto__"/ },
    { name: 'constructor as a name', opts: ['constructor=x'], error: /unknown option "constructor"/ },
    { name: 'toString as a name', opts: ['toString'], error: /unknown option "toString"/ },
    { name: 'an option twice', opts: ['prepend=/a', 'prepend=/b'], error: /prepend is given twice/ },
    { name: 'strip not a prefix', opts: ['strip=/b'], path: '/a', error: /strip=\/b is not a prefix of the route path \/a/ },
    { name: 'strip=/', opts: ['strip=/'], error: /would strip nothing/ },
    { name: 'prepend relative', opts: ['prepend=v2'], error: /^prepend: path "v2" must start with "\/"/ },
    { name: 'prepend with ..', opts: ['prepend=/a/../b'], error: /^prepend: .*segment/ },
    { name: 'prepend=/', opts: ['prepend=/'], error: /would add nothing/ },
    { name: 'prepend with a query', opts: ['prepend=/a?b'], error: /characters not allowed/ },
    { name: 'host empty', opts: ['host='], error: /host needs a value/ },
    { name: 'host with a path', opts: ['host=a.example/x'], error: /is not a valid host name/ },
    { name: 'host with CRLF', opts: ['host=a\r\nx-evil:1'], error: /is not a valid host name/ },
    { name: 'host port 0', opts: ['host=a.example:0'], error: /port must be 1-65535/ },
    { name: 'redirect without URL', opts: ['redirect=301'], error: /redirect must be <code>,<url>/ },
    { name: 'redirect with a comma in the URL', opts: ['redirect=301,https://a.example/x,y'], error: /redirect must be <code>,<url>/ },
    { name: 'redirect code 200', opts: ['redirect=200,https://a.example/'], error: /redirect code must be 301, 302, 303, 307 or 308, not "200"/ },
    { name: 'redirect code 300', opts: ['redirect=300,https://a.example/'], error: /redirect code must be/ },
    { name: 'redirect code 304', opts: ['redirect=304,https://a.example/'], error: /redirect code must be/ },
    { name: 'redirect code text', opts: ['redirect=abc,https://a.example/'], error: /redirect code must be/ },
    { name: 'redirect to javascript:', opts: ['redirect=301,javascript:alert(1)'], error: /scheme must be http or https, not javascript:/ },
    { name: 'redirect to data:', opts: ['redirect=302,data:text/html;charset=utf-8'], error: /scheme must be http or https/ },
    { name: 'redirect to file:', opts: ['redirect=302,file:///etc/passwd'], error: /scheme must be http or https/ },
    { name: 'redirect protocol-relative', opts: ['redirect=302,//evil.example/'], error: /names another host/ },
    { name: 'redirect backslash host', opts: ['redirect=302,/\\evil.example/'], error: /names another host/ },
    { name: 'redirect with credentials', opts: ['redirect=302,https://user:pw@a.example/'], error: /must not hold credentials/ },
    { name: 'redirect https:/ one slash', opts: ['redirect=302,https:/a.example/'], error: /must be written http\(s\):\/\/host/ },
    { name: 'redirect relative', opts: ['redirect=302,elsewhere'], error: /not an absolute http\(s\) URL/ },
    { name: 'redirect $path twice', opts: ['redirect=302,https://a.example$path$path'], error: /\$path once/ },
    { name: 'redirect $host', opts: ['redirect=302,https://$host/x'], error: /only \$path is replaced/ },
    { name: 'redirect $path in the query', opts: ['redirect=302,https://a.example/?to=$path'], error: /\$path belongs in the path/ },
    { name: 'redirect non-ASCII', opts: ['redirect=302,https://a.example/é'], error: /printable ASCII/ },
    { name: 'redirect huge', opts: [`redirect=302,https://a.example/${'x'.repeat(3000)}`], error: /at most 2048/ },
    { name: 'allow and deny together', opts: ['allow=ip:10.0.0.0/8', 'deny=ip:10.1.0.0/16'], error: /cannot both be given/ },
    { name: 'allow empty', opts: ['allow='], error: /needs at least one item/ },
    { name: 'allow without type', opts: ['allow=10.0.0.0/8'], error: /is not <type>:<data>/ },
    { name: 'allow unknown type', opts: ['allow=host:a.example'], error: /unknown item type "host"/ },
    { name: 'allow bad CIDR prefix', opts: ['allow=ip:10.0.0.0/33'], error: /prefix length must be 0-32/ },
    { name: 'allow bad IPv6 prefix', opts: ['allow=ip:fe80::/129'], error: /prefix length must be 0-128/ },
    { name: 'allow negative prefix', opts: ['allow=ip:10.0.0.0/-1'], error: /prefix length/ },
    { name: 'allow not an address', opts: ['deny=ip:10.0.0'], error: /is not an IP address or CIDR/ },
    { name: 'allow octet too large', opts: ['deny=ip:300.1.1.1'], error: /is not an IP address or CIDR/ },
    { name: 'allow zone id', opts: ['deny=ip:fe80::1%eth0'], error: /is not an IP address or CIDR/ },
    { name: 'allow empty item', opts: ['deny=ip:10.0.0.1,'], error: /is not <type>:<data>/ },
    { name: 'allow too many items', opts: [`allow=${Array.from({ length: 65 }, (_, i) => `ip:10.0.0.${i}`).join(',')}`], error: /at most 64/ },
    { name: 'proto=tcp', opts: ['proto=tcp'], error: /proto=tcp: .*TCP routes are not supported/ },
    { name: 'proto=HTTPS', opts: ['proto=HTTPS'], error: /proto must be http, https, grpc or grpcs/ },
    { name: 'proto empty', opts: ['proto='], error: /proto must be/ },
    { name: 'tlsskipverify=yes', opts: ['tlsskipverify=yes'], error: /tlsskipverify must be true or false/ },
    { name: 'tlsskipverify bare', opts: ['tlsskipverify'], error: /tlsskipverify must be true or false/ },
  ];
  for (const { name, opts, path, error } of cases) {
    test(name, () => {
      const parsed = parseRouteOptions(opts, path);
      assert.equal(parsed.ok, false, `expected ${JSON.stringify(opts)} to be refused`);
      if (!parsed.ok) {
        assert.match(parsed.error, error);
        assert.ok(parsed.error.length < 400, 'an error quotes its input cut');
      }
    });
  }

  test('a bad option after good ones refuses the whole option list (the tag), naming the bad one', () => {
    const parsed = parseRouteOptions(['strip=/a', 'host=dst', 'proto=tcp'], '/a');
    assert.deepEqual(parsed, { ok: false, error: 'proto=tcp: cgw proxies HTTP (and gRPC) only; TCP routes are not supported' });
  });

  test('a huge unknown name is quoted cut', () => {
    const parsed = parseRouteOptions([`${'n'.repeat(10_000)}=1`]);
    assert.equal(parsed.ok, false);
    if (!parsed.ok) assert.ok(parsed.error.length < 300);
  });

  test('parsed options are fresh objects: the defaults are never changed', () => {
    parseRouteOptions(['proto=https', 'tlsskipverify=true']);
    assert.equal(DEFAULT_ROUTE_OPTIONS.proto, 'http');
    assert.ok(Object.isFrozen(DEFAULT_ROUTE_OPTIONS));
  });
});

describe('parseProto', () => {
  const cases: [string, string | RegExp][] = [
    ['http', 'http'],
    ['https', 'https'],
    ['grpc', 'grpc'],
    ['grpcs', 'grpcs'],
    ['tcp', /TCP routes are not supported/],
    ['tcp+sni', /proto must be/],
    ['ws', /proto must be/],
  ];
  for (const [value, expected] of cases) {
    test(value, () => {
      const parsed = parseProto(value);
      if (typeof expected === 'string') assert.deepEqual(parsed, { ok: true, proto: expected });
      else assert.ok(!parsed.ok && expected.test(parsed.error));
    });
  }
});
