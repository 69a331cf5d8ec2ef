import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { compileAccessRules, normaliseCidr, parseAccessRules } from '../../src/core/ip-rules.ts';

describe('normaliseCidr: Go net.ParseCIDR semantics (host bits cleared, bare address = one host)', () => {
  const cases: [string, string | RegExp][] = [
    ['10.0.0.0/8', '10.0.0.0/8'],
    ['10.1.2.3/8', '10.0.0.0/8'],
    ['192.168.1.77/26', '192.168.1.64/26'],
    ['1.2.3.4', '1.2.3.4/32'],
    ['0.0.0.0/0', '0.0.0.0/0'],
    ['fe80::/10', 'fe80::/10'],
    ['fe80::1234/10', 'fe80::/10'],
    ['::1', '::1/128'],
    ['2001:DB8::1/48', '2001:db8::/48'],
    ['2001:db8:0:0:1:0:0:1/128', '2001:db8::1:0:0:1/128'],
    ['::ffff:10.1.2.3/120', '::ffff:a01:200/120'],
    ['10.0.0.0/33', /prefix length must be 0-32/],
    ['::/129', /prefix length must be 0-128/],
    ['10.0.0.0/', /prefix length/],
    ['10.0.0.0/08x', /prefix length/],
    ['10.0.0', /not an IP address/],
    ['example.com', /not an IP address/],
    ['', /not an IP address/],
    ['fe80::1%lo', /not an IP address/],
  ];
  for (const [input, expected] of cases) {
    test(JSON.stringify(input), () => {
      const out = normaliseCidr(input);
      if (typeof expected === 'string') assert.equal(out, expected);
      else assert.ok(typeof out !== 'string' && expected.test(out.error), JSON.stringify(out));
    });
  }
});

describe('compiled rules: fabio denyByIP', () => {
  const allow = (value: string) => {
    const parsed = parseAccessRules('allow', value);
    assert.ok(parsed.ok);
    return compileAccessRules(parsed.rules);
  };
  const deny = (value: string) => {
    const parsed = parseAccessRules('deny', value);
    assert.ok(parsed.ok);
    return compileAccessRules(parsed.rules);
  };
  const cases: { rules: ReturnType<typeof allow>; address: string; denied: boolean }[] = [
    { rules: allow('ip:10.0.0.0/8,ip:fe80::/10'), address: '10.200.1.1', denied: false },
    { rules: allow('ip:10.0.0.0/8,ip:fe80::/10'), address: 'fe80::99', denied: false },
    { rules: allow('ip:10.0.0.0/8,ip:fe80::/10'), address: '11.0.0.1', denied: true },
    { rules: allow('ip:10.0.0.0/8,ip:fe80::/10'), address: '::1', denied: true },
    // A dual-stack socket reports an IPv4 peer as ::ffff:a.b.c.d: checked as a.b.c.d (Go's To4).
    { rules: allow('ip:127.0.0.1'), address: '::ffff:127.0.0.1', denied: false },
    { rules: deny('ip:127.0.0.0/8'), address: '::ffff:127.0.0.1', denied: true },
    { rules: deny('ip:127.0.0.0/8'), address: '127.9.9.9', denied: true },
    { rules: deny('ip:127.0.0.0/8'), address: '128.0.0.1', denied: false },
    { rules: deny('ip:::1'), address: '::1', denied: true },
    // An unparsable address is skipped by fabio, by either list (only X-Forwarded-For can hold one).
    { rules: allow('ip:10.0.0.0/8'), address: 'not-an-ip', denied: false },
    { rules: deny('ip:0.0.0.0/0'), address: 'not-an-ip', denied: false },
    { rules: allow('ip:10.0.0.0/8'), address: '', denied: false },
  ];
  for (const { rules, address, denied } of cases) {
    test(`${rules.kind} ${address || '(empty)'} → ${denied ? 'denied' : 'admitted'}`, () => assert.equal(rules.denies(address), denied));
  }
});
