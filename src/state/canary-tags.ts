/**
 * Canary weights against the tags a service's instances carry in Consul's catalog, the pure part
 * of `cgw canary set` and of the admin API's `PUT /v1/canary/<service>`: both refuse the same
 * weights with the same words.
 */

/** A service as Consul's catalog lists it: every registered instance, whatever its health. */
export type ServiceLookup =
  | { readonly found: true; readonly instances: number; readonly tags: readonly string[] }
  /** No instance listed. With ACLs on, a token without service:read also sees none (Consul answers 200 []). */
  | { readonly found: false; readonly aclsEnabled: boolean };

/** What the stored or proposed weights mean for the service's instances in the catalog. */
export interface TagCheck {
  /** Why the weights would send traffic nowhere (a refusal unless --force); null when fine. */
  readonly problem: string | null;
  /** Facts worth saying that refuse nothing (a weight of 0 on a tag nobody carries). */
  readonly notes: readonly string[];
  /** Tags with a weight that no instance carries. */
  readonly missing: readonly string[];
}

/** A service name accepted in a key (`canary/<service>`, `rollouts/<service>`). */
export const KEY_SERVICE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

const ROUTE_TAG = /^urlprefix-/;

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

/** "no instance" text for an unknown service, true whether or not ACLs hide it. */
export function unknownServiceText(service: string, lookup: ServiceLookup): string {
  const acl = !lookup.found && lookup.aclsEnabled ? ' (or the ACL token may not read it: it needs service:read)' : '';
  return `Consul's catalog has no instance of service ${service}, whatever its health${acl}`;
}

/**
 * Checks weights against the tags the service's instances carry (all instances, whatever their
 * health, as the catalog lists them; tags are case-sensitive). A weight above 0 on a tag no
 * instance carries is a problem: the gateway treats it as invalid. A weight of 0 there is allowed.
 */
export function checkWeightTags(service: string, weights: Readonly<Record<string, number>>, lookup: ServiceLookup): TagCheck {
  const tags = Object.keys(weights);
  if (!lookup.found) return { problem: unknownServiceText(service, lookup), notes: [], missing: tags };
  const carried = new Set(lookup.tags);
  const missing = tags.filter((t) => !carried.has(t));
  const positive = missing.filter((t) => (weights[t] ?? 0) > 0);
  const zero = missing.filter((t) => (weights[t] ?? 0) === 0);
  const listed = lookup.tags.filter((t) => !ROUTE_TAG.test(t));
  const existing = `tags on its ${plural(lookup.instances, 'instance')}: ${listed.length > 0 ? listed.join(', ') : 'none besides urlprefix- routes'}`;
  const guess = (tag: string): string => {
    const same = lookup.tags.filter((t) => t.toLowerCase() === tag.toLowerCase());
    return same.length > 0 ? `; tags are case-sensitive: did you mean ${same.join(' or ')}?` : '';
  };
  const notes = zero.map((t) => `no instance of ${service} carries tag ${t} (weight 0${guess(t)}); allowed at weight 0, which sends it nothing`);
  const problem =
    positive.length === 0
      ? null
      : `no instance of ${service} carries tag${positive.length === 1 ? '' : 's'} ${positive.map((t) => `${t} (weight ${weights[t] ?? 0}${guess(t)})`).join(', ')}; ${existing}`;
  return { problem, notes, missing };
}
