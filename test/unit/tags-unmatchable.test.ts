/**
 * Requests are normalised before routing (escaped unreserved characters decoded, other escapes
 * upper-cased, repeated slashes merged; escaped / or \ and dot segments refused). A route written
 * in any other spelling could never match: such tags and route documents are problems, not routes
 * that silently never apply (and never carry their policy).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { normalizePath, unmatchableRoutePath } from '../../src/core/url-path.ts';
import { parseUrlprefixTag } from '../../src/state/tags.ts';
import { parseDocumentText } from '../../src/policy/documents.ts';
import { buildSnapshot } from '../../src/state/snapshot.ts';

describe('tags whose path can never match are refused', () => {
  const cases: { tag: string; error: RegExp }[] = [
    { tag: 'urlprefix-/%61bc', error: /"\/%61bc" can never match: requests are normalised to "\/abc"/ },
    { tag: 'urlprefix-/api/%61dmin', error: /normalised to "\/api\/admin"/ },
    { tag: 'urlprefix-/a%2Db', error: /normalised to "\/a-b"/ },
    { tag: 'urlprefix-/%7Euser', error: /normalised to "\/~user"/ },
    { tag: 'urlprefix-/a%5fb', error: /normalised to "\/a_b"/ },
    { tag: 'urlprefix-/a%2eb', error: /normalised to "\/a\.b"/ },
    { tag: 'urlprefix-/a%2ab', error: /normalised to "\/a%2Ab"/ },
    { tag: 'urlprefix-/a%2fb', error: /can never match: requests with an escaped "\/"/ },
    { tag: 'urlprefix-/a%2Fb', error: /escaped "\/"/ },
    { tag: 'urlprefix-/a%5Cb', error: /escaped "\/" or "\\"/ },
    { tag: 'urlprefix-/a%zz', error: /broken escape/ },
    { tag: 'urlprefix-/a%', error: /broken escape/ },
    { tag: 'urlprefix-/a/%2e%2e/b', error: /dot segment/ },
    { tag: 'urlprefix-/a/%2E/b', error: /dot segment/ },
    { tag: 'urlprefix-host.example/%61bc', error: /normalised to "\/abc"/ },
    { tag: 'urlprefix-/abc strip=/%61bc', error: /strip: path "\/%61bc" can never match/ },
  ];
  for (const { tag, error } of cases) {
    test(tag, () => {
      const parsed = parseUrlprefixTag(tag);
      assert.equal(parsed.ok, false, JSON.stringify(parsed));
      if (!parsed.ok) assert.match(parsed.error, error);
    });
  }
});

describe('tags in the one normalised spelling are accepted', () => {
  const cases: { tag: string; path: string }[] = [
    { tag: 'urlprefix-/abc', path: '/abc' },
    { tag: 'urlprefix-/a%20b', path: '/a%20b' },
    { tag: 'urlprefix-/a%2Ab', path: '/a%2Ab' },
    { tag: 'urlprefix-/caf%C3%A9', path: '/caf%C3%A9' },
    { tag: 'urlprefix-//abc//', path: '/abc' },
    { tag: 'urlprefix-/~user', path: '/~user' },
  ];
  for (const { tag, path } of cases) {
    test(tag, () => {
      const parsed = parseUrlprefixTag(tag);
      assert.ok(parsed.ok, JSON.stringify(parsed));
      assert.equal(parsed.route.path, path);
      // The route path is a fixed point of request normalisation, so a request for it matches.
      assert.equal(normalizePath(path), path);
      assert.equal(unmatchableRoutePath(path), null);
    });
  }
});

describe('the same rule for route documents', () => {
  for (const path of ['/%61bc', '/a%2fb', '//legacy']) {
    test(path, () => {
      const parsed = parseDocumentText(`path: "${path}"\nupstreams: [http://127.0.0.1:9000]\n`, 'route');
      assert.equal(parsed.ok, false);
      if (!parsed.ok) assert.match(parsed.error, /can never match/);
    });
  }
});

describe('buildSnapshot: an unmatchable tag is a problem; the service\'s other routes stay', () => {
  test('urlprefix-/%61bc next to urlprefix-/web', () => {
    const snapshot = buildSnapshot(
      {
        catalog: { web: ['urlprefix-/%61bc', 'urlprefix-/web'] },
        health: new Map([
          ['web', [{ id: 'w1', service: 'web', node: 'n', address: '127.0.0.1', port: 8080, tags: ['urlprefix-/%61bc', 'urlprefix-/web'], weights: { passing: 1, warning: 1 }, checks: [] }]],
        ]),
        kv: [],
      },
      { allowWarning: false, kvPrefix: 'gateway/' },
    );
    assert.deepEqual(snapshot.routes.map((r) => r.id), ['/web']);
    const problem = snapshot.problems.find((p) => p.kind === 'tag');
    assert.equal(problem?.subject, 'web');
    assert.match(problem?.message ?? '', /tag "urlprefix-\/%61bc": path "\/%61bc" can never match/);
  });
});
