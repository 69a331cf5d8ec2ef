import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { compileRedirect, redirectsToItself } from '../../src/runtime/redirect.ts';

describe("compileRedirect: fabio's Target.BuildRedirectURL", () => {
  const cases: { url: string; path: string; query: string; location: string }[] = [
    { url: 'https://www.foo.com$path', path: '/a/b', query: '?x=1', location: 'https://www.foo.com/a/b?x=1' },
    { url: 'https://www.foo.com/$path', path: '/a/b', query: '', location: 'https://www.foo.com/a/b' },
    { url: 'https://www.foo.com/new$path', path: '/a', query: '?q', location: 'https://www.foo.com/new/a?q' },
    { url: 'https://www.foo.com/new/$path', path: '/', query: '', location: 'https://www.foo.com/new/' },
    { url: 'https://www.foo.com$path?from=old', path: '/a', query: '?x=1', location: 'https://www.foo.com/a?from=old' },
    { url: 'https://www.foo.com/fixed', path: '/a', query: '?x=1', location: 'https://www.foo.com/fixed' },
    { url: '/elsewhere$path', path: '/a', query: '', location: '/elsewhere/a' },
  ];
  for (const { url, path, query, location } of cases) {
    test(`${url} for ${path}${query}`, () => assert.equal(compileRedirect({ code: 301, url }).location(path, query), location));
  }
});

describe('redirectsToItself', () => {
  const cases: [location: string, scheme: 'http' | 'https', host: string | undefined, path: string, expected: boolean][] = [
    ['https://a.example/x', 'https', 'a.example', '/x', true],
    ['https://a.example/x?q=1', 'https', 'A.example', '/x', true],
    ['https://a.example/x', 'http', 'a.example', '/x', false],
    ['https://b.example/x', 'https', 'a.example', '/x', false],
    ['/x', 'http', 'a.example', '/x', true],
    ['/y', 'http', 'a.example', '/x', false],
  ];
  for (const [location, scheme, host, path, expected] of cases) test(`${location} from ${scheme}://${host}${path}`, () => assert.equal(redirectsToItself(location, scheme, host, path), expected));
});
