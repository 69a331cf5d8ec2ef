import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { DataPlaneReport, ReportScope } from '../core/types.ts';
import { checkAdminAccess, hostAllowed, type AdminAccess } from './access.ts';
import type { AdminControls, ControlAnswer } from './controls.ts';
import type { AdminEvents } from './events.ts';
import { decodePathSegment } from './path-segment.ts';
import { AdminWrites, writeRoute, type AdminWriteRecord } from './writes.ts';
import { uiAsset, UI_HEADERS } from './ui/assets.ts';
import { canaryView, consumersView, endpointsView, policiesView, problemsView, redactedJson, routesView, servicesView, stalenessView, statusView, type AdminSources } from './views.ts';

/**
 * Admin HTTP on its own listener (default 127.0.0.1:9901): probes, Prometheus metrics, read-only
 * JSON views, the event stream and the dashboard's files; with an admin token, the few write
 * routes of `writes.ts`. The CLI's inspection commands read only this API.
 */
export interface MetricsSource {
  /** The exposition text: this process's metrics, summed with every worker's. */
  readonly text: () => Promise<string>;
  readonly contentType: string;
}

/** Every admin request is small and quick: bounded head, bounded time; bodies only on the write routes, bounded there. */
const ADMIN_SERVER_OPTIONS = { maxHeaderSize: 16 * 1024, headersTimeout: 10_000, requestTimeout: 30_000, keepAliveTimeout: 5_000 } as const;

const NO_TOKEN: AdminAccess = { tokenDigest: null, readsNeedToken: false };

export interface AdminExtras {
  /** The writes and Consul reads (rollouts, fleet); without them, or without an admin token, writes stay 405. */
  readonly controls?: AdminControls;
  readonly events?: AdminEvents;
  readonly onWrite?: (write: AdminWriteRecord) => void;
}

export function createAdminServer(
  src: AdminSources,
  metrics: MetricsSource,
  onFailure: (err: unknown) => void,
  access: AdminAccess = NO_TOKEN,
  extras: AdminExtras = {},
): Server {
  const writes = new AdminWrites(extras.onWrite);
  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    try {
      route(req, res);
    } catch (err) {
      // One admin call can never end the process: a bug answers 500 and is logged and counted.
      onFailure(err);
      if (!res.headersSent) sendJson(res, 500, { error: { code: 'internal_error', message: 'internal error in the admin API' } });
      else res.destroy();
    }
  };
  const server = createServer(ADMIN_SERVER_OPTIONS, handle);
  // An Expect other than 100-continue is ignored (RFC 9110 §10.1.1 allows it): the request gets
  // its usual JSON answer, not a bare 417 from Node.
  server.on('checkExpectation', handle);
  // Accept errors (EMFILE) would otherwise be an unhandled 'error' event.
  server.on('error', onFailure);
  server.on('clientError', (_err, socket) => socket.destroy());
  return server;

  function route(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    const write = req.method !== 'GET' && req.method !== 'HEAD';
    if (!hostAllowed(req, access)) {
      return sendJson(res, 403, { error: { code: 'host_not_allowed', message: 'this admin listener is on loopback and answers only requests for localhost, 127.0.0.1 or [::1]' } });
    }
    // The page and its script hold no data (everything comes from the API, with the token when
    // reads need it), so they load without one: a person must see the page to type the token in.
    const asset = write ? undefined : uiAsset(path);
    if (asset) {
      res.writeHead(200, { ...UI_HEADERS, 'content-type': asset.type, 'content-length': asset.bytes.length });
      res.end(req.method === 'HEAD' ? undefined : asset.bytes);
      return;
    }
    const control = write && extras.controls && access.tokenDigest !== null ? writeRoute(req.method ?? '', path) : undefined;
    const allowed = checkAdminAccess(req, path, access, write);
    if (control && allowed !== 'allowed') writes.unauthorized(req, control);
    if (allowed !== 'allowed') {
      res.setHeader('www-authenticate', allowed === 'wrong' ? 'Bearer realm="cgw-admin", error="invalid_token"' : 'Bearer realm="cgw-admin"');
      return sendJson(res, 401, { error: { code: 'unauthorized', message: allowed === 'wrong' ? 'the admin token does not match' : 'the admin API needs Authorization: Bearer <admin token> (CGW_ADMIN_TOKEN for the CLI)' } });
    }
    if (control && extras.controls) return writes.run(req, res, extras.controls, control, (status, body) => sendJson(res, status, body), fail);
    if (write) return sendJson(res, 405, { error: { code: 'method_not_allowed', message: 'admin API is read-only' } });
    switch (path) {
      case '/v1/events': {
        if (!extras.events) break;
        if (req.method === 'HEAD') return sendJson(res, 200, {});
        if (extras.events.attach(req, res)) return;
        res.setHeader('retry-after', '10');
        return sendJson(res, 503, { error: { code: 'too_many_clients', message: `the event stream has as many clients as it takes (${extras.events.count}); try again later` } });
      }
      case '/v1/rollouts':
        if (!extras.controls) break;
        return answer(extras.controls.rollouts());
      case '/v1/fleet':
        if (!extras.controls) break;
        return answer(extras.controls.fleet());
      case '/-/healthz':
        return sendJson(res, 200, { status: 'ok' });
      case '/-/readyz': {
        // Ready stays 200 while the newest configuration fails to build: the last good one serves,
        // and a fleet whose every gateway met the same bad entry must not leave its load balancer.
        // The body says that changes are not being applied.
        const failure = src.buildFailure();
        // Serving the state file (Consul not reached at start) is ready too, and says so: README, "--state-file".
        const detail = { ...(failure ? { configurationStale: true, buildFailure: failure } : {}), ...stalenessView(src) };
        return src.ready() ? sendJson(res, 200, { status: 'ready', ...detail }) : sendJson(res, 503, { status: 'not_ready', ...detail });
      }
      case '/metrics':
        metrics.text().then(
          (text) => {
            res.writeHead(200, { 'content-type': metrics.contentType });
            res.end(text);
          },
          (err: unknown) => sendJson(res, 500, { error: { code: 'internal_error', message: String(err) } }),
        );
        return;
      case '/v1/status':
        return withPlane({ kind: 'summary' }, (plane) => sendJson(res, 200, statusView(src, plane)));
      case '/v1/certs':
        // Names, SANs, expiry and source of the certificates in force, and refused ones; never keys.
        return withPlane({ kind: 'summary' }, (plane) => sendJson(res, 200, plane?.tls ?? { certificates: [], rejected: [], default: null }));
      case '/v1/services':
        return withPlane({ kind: 'services' }, (plane) => sendJson(res, 200, servicesView(src, plane)));
      case '/v1/routes':
        return sendJson(res, 200, routesView(src));
      case '/v1/canary':
        return sendJson(res, 200, canaryView(src));
      case '/v1/watches':
        return sendJson(res, 200, src.discovery());
      case '/v1/problems':
        return sendJson(res, 200, problemsView(src));
      case '/v1/policies':
        return sendJson(res, 200, policiesView(src));
      case '/v1/consumers':
        return sendJson(res, 200, consumersView(src));
      case '/v1/snapshot':
        return sendText(res, 200, redactedJson(src.published() ?? null));
    }
    const m = /^\/v1\/services\/([^/]+)\/endpoints$/.exec(path);
    if (m) {
      const name = decodePathSegment(m[1] ?? '');
      if (name === undefined) return sendJson(res, 400, { error: { code: 'bad_request', message: 'the service name in the path is not valid percent-encoded UTF-8' } });
      return withPlane({ kind: 'service', name }, (plane) => {
        const view = endpointsView(src, name, plane);
        return view ? sendJson(res, 200, view) : sendJson(res, 404, { error: { code: 'service_not_found', message: `no routed service named ${JSON.stringify(name)}` } });
      });
    }
    return sendJson(res, 404, { error: { code: 'not_found', message: `no admin endpoint ${JSON.stringify(path.slice(0, 200))}` } });

    function answer(pending: Promise<ControlAnswer>): void {
      pending.then((a) => sendJson(res, a.status, a.body), fail);
    }

    /** Views that show data-plane state wait for its report (workers answer over IPC). */
    function withPlane(scope: ReportScope, send: (plane: DataPlaneReport | undefined) => void): void {
      src.dataPlane(scope).then(
        (plane) => {
          try {
            send(plane);
          } catch (err) {
            fail(err);
          }
        },
        fail,
      );
    }

    function fail(err: unknown): void {
      onFailure(err);
      if (!res.headersSent) sendJson(res, 500, { error: { code: 'internal_error', message: 'internal error in the admin API' } });
      else res.destroy();
    }
  }
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  sendText(res, status, JSON.stringify(body, null, 2));
}

function sendText(res: ServerResponse, status: number, text: string): void {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' });
  res.end(text);
}
