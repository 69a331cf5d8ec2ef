import { createServer, type Server, type ServerResponse } from 'node:http';
import type { Registry } from 'prom-client';
import { canaryView, consumersView, endpointsView, policiesView, problemsView, redactedJson, routesView, servicesView, statusView, type AdminSources } from './views.ts';

/**
 * Admin HTTP on its own listener (default 127.0.0.1:9901): probes, Prometheus metrics and read-only
 * JSON views. The CLI's inspection commands read only this API.
 */
export function createAdminServer(src: AdminSources, registry: Registry): Server {
  return createServer((req, res) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return sendJson(res, 405, { error: { code: 'method_not_allowed', message: 'admin API is read-only' } });
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    switch (path) {
      case '/-/healthz':
        return sendJson(res, 200, { status: 'ok' });
      case '/-/readyz':
        return src.ready() ? sendJson(res, 200, { status: 'ready' }) : sendJson(res, 503, { status: 'starting' });
      case '/metrics':
        registry.metrics().then(
          (text) => {
            res.writeHead(200, { 'content-type': registry.contentType });
            res.end(text);
          },
          (err: unknown) => sendJson(res, 500, { error: { code: 'internal_error', message: String(err) } }),
        );
        return;
      case '/v1/status':
        return sendJson(res, 200, statusView(src));
      case '/v1/services':
        return sendJson(res, 200, servicesView(src));
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
      const name = decodeURIComponent(m[1] ?? '');
      const view = endpointsView(src, name);
      return view ? sendJson(res, 200, view) : sendJson(res, 404, { error: { code: 'service_not_found', message: `no routed service named "${name}"` } });
    }
    return sendJson(res, 404, { error: { code: 'not_found', message: `no admin endpoint ${path}` } });
  });
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  sendText(res, status, JSON.stringify(body, null, 2));
}

function sendText(res: ServerResponse, status: number, text: string): void {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(text);
}
