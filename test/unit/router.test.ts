import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { compileRouter, normaliseHost, type RoutableRoute } from '../../src/router/router.ts';

interface Route extends RoutableRoute {
  readonly name: string;
}

const r = (name: string, host: string | null, path: string): Route => ({ name, host, path });

const routes: Route[] = [
  r('root', null, '/'),
  r('web', null, '/web'),
  r('web-admin', null, '/web/admin'),
  r('api', null, '/api'),
  r('api-v2', null, '/api/v2'),
  r('ex-api', 'example.com', '/api'),
  r('ex-root', 'example.com', '/'),
  r('shop-cart', 'shop.example.com', '/cart'),
];

describe('compileRouter.match', () => {
  const router = compileRouter(routes);
  const cases: { name: string; host: string | undefined; path: string; expected: string | undefined }[] = [
    { name: 'exact host-less prefix', host: 'other.test', path: '/web', expected: 'web' },
    { name: 'deeper path under a prefix', host: 'other.test', path: '/web/page/1', expected: 'web' },
    { name: 'longest prefix wins', host: 'other.test', path: '/web/admin/users', expected: 'web-admin' },
    { name: 'longest prefix wins (exact)', host: 'other.test', path: '/api/v2', expected: 'api-v2' },
    { name: 'segment boundary: /webx is not /web', host: 'other.test', path: '/webx', expected: 'root' },
    { name: 'segment boundary: /web/adminx is /web', host: 'other.test', path: '/web/adminx', expected: 'web' },
    { name: 'segment boundary: /api/v20 is /api', host: 'other.test', path: '/api/v20', expected: 'api' },
    { name: 'trailing slash on request path', host: 'other.test', path: '/web/', expected: 'web' },
    { name: 'trailing slash on a deeper route', host: 'other.test', path: '/web/admin/', expected: 'web-admin' },
    { name: 'root route fallback', host: 'other.test', path: '/nothing/here', expected: 'root' },
    { name: 'root path', host: 'other.test', path: '/', expected: 'root' },
    { name: 'no host header: host-less routes', host: undefined, path: '/api/x', expected: 'api' },
    { name: 'host-specific before host-less', host: 'example.com', path: '/api/x', expected: 'ex-api' },
    { name: 'host-specific root before host-less longer prefix', host: 'example.com', path: '/web', expected: 'ex-root' },
    { name: 'host is case-insensitive', host: 'EXAMPLE.Com', path: '/api', expected: 'ex-api' },
    { name: 'host port ignored', host: 'example.com:8080', path: '/api', expected: 'ex-api' },
    { name: 'host with upper case and port', host: 'Example.COM:443', path: '/api/v2', expected: 'ex-api' },
    { name: 'fully qualified host with trailing dot', host: 'example.com.', path: '/api', expected: 'ex-api' },
    { name: 'host table miss falls back to host-less', host: 'shop.example.com', path: '/api/v2/x', expected: 'api-v2' },
    { name: 'host table hit', host: 'shop.example.com', path: '/cart/items', expected: 'shop-cart' },
    { name: 'unrelated host does not see host routes', host: 'evil.test', path: '/cart', expected: 'root' },
  ];
  for (const c of cases) {
    test(`${c.name}: ${c.host ?? '(none)'} ${c.path}`, () => {
      assert.equal(router.match(c.host, c.path)?.name, c.expected);
    });
  }
});

describe('compileRouter without a root route', () => {
  const router = compileRouter([r('web', null, '/web'), r('ex', 'example.com', '/api')]);
  const cases: { host: string | undefined; path: string; expected: string | undefined }[] = [
    { host: 'x.test', path: '/', expected: undefined },
    { host: 'x.test', path: '/webx', expected: undefined },
    { host: 'x.test', path: '/other', expected: undefined },
    { host: 'x.test', path: '/api', expected: undefined },
    { host: 'example.com', path: '/other', expected: undefined },
    { host: 'example.com', path: '/web/a', expected: 'web' },
    { host: undefined, path: '/web', expected: 'web' },
  ];
  for (const c of cases) {
    test(`${c.host ?? '(none)'} ${c.path} → ${c.expected ?? 'undefined'}`, () => {
      assert.equal(router.match(c.host, c.path)?.name, c.expected);
    });
  }

  test('an empty router matches nothing', () => {
    const empty = compileRouter<Route>([]);
    assert.equal(empty.match('example.com', '/'), undefined);
    assert.equal(empty.match(undefined, '/web'), undefined);
  });

  test('on a duplicate (host, path) the first route wins', () => {
    const dup = compileRouter([r('first', null, '/a'), r('second', null, '/a')]);
    assert.equal(dup.match(undefined, '/a')?.name, 'first');
  });
});

describe('normaliseHost', () => {
  const cases: [string, string][] = [
    ['Example.COM', 'example.com'],
    ['example.com:8080', 'example.com'],
    ['example.com.', 'example.com'],
    ['example.com.:80', 'example.com'],
    ['[::1]:8080', '[::1]'],
    ['[::1]', '[::1]'],
    ['127.0.0.1:80', '127.0.0.1'],
  ];
  for (const [input, expected] of cases) {
    test(`${input} → ${expected}`, () => assert.equal(normaliseHost(input), expected));
  }
});
