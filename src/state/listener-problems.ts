import type { Problem } from '../core/types.ts';
import type { RouteSnapshot } from './snapshot.ts';

/** What the gateway's listeners can do, from the static configuration (fixed at boot). */
export interface ListenerFacts {
  /** There is a --listen-tls listener (redirect-https needs one). */
  readonly https: boolean;
  /** --tls-client-auth asks for client certificates (the mtls auth method needs it). */
  readonly clientCertificates: boolean;
}

/**
 * Routes asking for what no listener offers. They still serve (a redirect with nowhere to go
 * would break the route; an mtls-only route refuses every request with 401), but the operator
 * must see why the setting has no effect.
 */
export function listenerProblems(routes: readonly RouteSnapshot[], facts: ListenerFacts): Problem[] {
  const problems: Problem[] = [];
  for (const r of routes) {
    if (r.redirectHttps && !facts.https) {
      const from = r.source.kind === 'tag' && !r.policy.redirectHttps ? `tag "${r.source.tag}"` : `policy ${r.policy.sources.redirectHttps ?? ''}`.trim();
      problems.push({ kind: 'route', subject: r.id, message: `redirect-https (${from}) needs an HTTPS listener (--listen-tls); the route serves plain HTTP instead` });
    }
    if (r.policy.auth?.methods.includes('mtls') && !facts.clientCertificates) {
      problems.push({
        kind: 'policy',
        subject: r.policy.sources.auth ?? r.id,
        message: `route ${r.id} accepts client certificates (auth method mtls), but the gateway does not ask for them (--tls-client-auth none): no request can authenticate that way`,
      });
    }
  }
  return problems;
}
