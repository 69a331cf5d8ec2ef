import { BlockList, isIP } from 'node:net';

/**
 * fabio's route access rules (`allow=ip:10.0.0.0/8,ip:fe80::/10`, `deny=ip:1.2.3.4`), as fabio's
 * route/access_rules.go reads them: comma-separated `<type>:<data>` items, only the `ip` type, a
 * bare address meaning /32 or /128, a CIDR's host bits ignored (Go's net.ParseCIDR keeps the
 * network). Parsed in state/ when a tag is read and compiled in runtime/ with each snapshot; the
 * request path only calls `denies`. node:net's BlockList does the matching (a prefix trie in C++),
 * so there is no hand-written address arithmetic here.
 */
export type AccessKind = 'allow' | 'deny';

export interface AccessRules {
  readonly kind: AccessKind;
  /** Normalised CIDRs (`10.0.0.0/8`, `fe80::/10`), in the order given. */
  readonly cidrs: readonly string[];
}

/** More would be a list to maintain in a tag; Consul tags are meant to be short. */
export const MAX_ACCESS_ITEMS = 64;

export function parseAccessRules(kind: AccessKind, value: string): { ok: true; rules: AccessRules } | { ok: false; error: string } {
  if (value === '') return { ok: false, error: `${kind}= needs at least one item, e.g. ${kind}=ip:10.0.0.0/8` };
  const items = value.split(',');
  if (items.length > MAX_ACCESS_ITEMS) return { ok: false, error: `${kind}= has ${items.length} items; at most ${MAX_ACCESS_ITEMS}` };
  const cidrs: string[] = [];
  for (const item of items) {
    const colon = item.indexOf(':');
    if (colon === -1) return { ok: false, error: `${kind}: "${short(item)}" is not <type>:<data> (e.g. ip:10.0.0.0/8)` };
    const type = item.slice(0, colon).trim().toLowerCase();
    if (type !== 'ip') return { ok: false, error: `${kind}: unknown item type "${short(type)}" (only ip: is supported, as in fabio)` };
    const cidr = normaliseCidr(item.slice(colon + 1).trim());
    if (typeof cidr !== 'string') return { ok: false, error: `${kind}: ${cidr.error}` };
    cidrs.push(cidr);
  }
  return { ok: true, rules: { kind, cidrs } };
}

/** `address[/prefix]` → `network/prefix`, the host bits cleared; or why not. */
export function normaliseCidr(text: string): string | { error: string } {
  const slash = text.indexOf('/');
  const address = slash === -1 ? text : text.slice(0, slash);
  const family = isIP(address);
  if (family === 0 || address.includes('%')) return { error: `"${short(text)}" is not an IP address or CIDR` };
  const bits = family === 4 ? 32 : 128;
  const prefixText = slash === -1 ? String(bits) : text.slice(slash + 1);
  if (!/^\d{1,3}$/.test(prefixText) || Number(prefixText) > bits) return { error: `"${short(text)}": prefix length must be 0-${bits}` };
  const prefix = Number(prefixText);
  const bytes = family === 4 ? address.split('.').map(Number) : ipv6Bytes(address);
  for (let i = 0; i < bytes.length; i++) {
    const keep = Math.max(0, Math.min(8, prefix - i * 8));
    bytes[i] = (bytes[i] as number) & (0xff << (8 - keep)) & 0xff;
  }
  return `${family === 4 ? bytes.join('.') : ipv6Text(bytes)}/${prefix}`;
}

/** The compiled form: one BlockList, asked once per request. */
export interface AccessCheck {
  readonly kind: AccessKind;
  /** True when fabio would refuse this address (an allow list that misses it, or a deny list that holds it). */
  denies(address: string): boolean;
}

export function compileAccessRules(rules: AccessRules): AccessCheck {
  const list = new BlockList();
  for (const cidr of rules.cidrs) {
    const [network = '', prefix = '0'] = cidr.split('/');
    list.addSubnet(network, Number(prefix), isIP(network) === 6 ? 'ipv6' : 'ipv4');
  }
  const contains = (address: string): boolean => {
    const plain = unmapped(address);
    const family = isIP(plain);
    return family !== 0 && list.check(plain, family === 6 ? 'ipv6' : 'ipv4');
  };
  // fabio (denyByIP): an address that does not parse is not denied by either list; the socket
  // peer always parses, so only an unparsable X-Forwarded-For element is skipped this way.
  return rules.kind === 'allow'
    ? { kind: 'allow', denies: (address) => isIP(unmapped(address)) !== 0 && !contains(address) }
    : { kind: 'deny', denies: (address) => contains(address) };
}

/** `::ffff:10.1.2.3` (a dual-stack socket's IPv4 peer) is checked as 10.1.2.3, like Go's IP.To4. */
function unmapped(address: string): string {
  return address.length > 7 && address.slice(0, 7).toLowerCase() === '::ffff:' && isIP(address.slice(7)) === 4 ? address.slice(7) : address;
}

function ipv6Bytes(address: string): number[] {
  let text = address.toLowerCase();
  // An embedded IPv4 tail (::ffff:1.2.3.4) becomes two groups.
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    const [a = 0, b = 0, c = 0, d = 0] = (v4[1] as string).split('.').map(Number);
    text = `${text.slice(0, v4.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head = '', tail] = text.split('::');
  const headGroups = head === '' ? [] : head.split(':');
  const tailGroups = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = tail === undefined ? headGroups : [...headGroups, ...Array<string>(8 - headGroups.length - tailGroups.length).fill('0'), ...tailGroups];
  return groups.flatMap((g) => {
    const n = parseInt(g, 16);
    return [n >> 8, n & 0xff];
  });
}

function ipv6Text(bytes: readonly number[]): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((((bytes[i] as number) << 8) | (bytes[i + 1] as number)).toString(16));
  // RFC 5952 §4.2: the longest run of two or more zero groups becomes "::".
  let best = -1;
  let bestLength = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLength) {
      best = i;
      bestLength = j - i;
    }
    i = j;
  }
  if (best === -1) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLength).join(':')}`;
}

function short(text: string): string {
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}
