import { PAGE_CSS } from './page-css.ts';
import { PAGE_HTML } from './page-html.ts';
import { PAGE_JS } from './page-js.ts';

/**
 * The dashboard's files, served by the admin listener at `/ui` (the page), `/ui/app.js` and
 * `/ui/app.css`. The page loads nothing from elsewhere and runs no inline script: the
 * Content-Security-Policy below allows only this origin, so markup that slipped into the page
 * (a hostile service name) could not run.
 */
export interface UiAsset {
  readonly type: string;
  readonly bytes: Buffer;
}

function asset(type: string, text: string): UiAsset {
  return { type, bytes: Buffer.from(text, 'utf8') };
}

const ICON_SVG = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" fill="#1d5fb4"/><path d="M4 8h8M8 4v8" stroke="#fff" stroke-width="2"/></svg>';

const PAGE = asset('text/html; charset=utf-8', PAGE_HTML);
const ASSETS: ReadonlyMap<string, UiAsset> = new Map([
  ['/ui', PAGE],
  ['/ui/', PAGE],
  ['/ui/index.html', PAGE],
  ['/ui/app.js', asset('text/javascript; charset=utf-8', PAGE_JS)],
  ['/ui/app.css', asset('text/css; charset=utf-8', PAGE_CSS)],
  // Without an icon of its own, a browser asks for /favicon.ico and logs the 404.
  ['/ui/icon.svg', asset('image/svg+xml', ICON_SVG)],
]);

export function uiAsset(path: string): UiAsset | undefined {
  return ASSETS.get(path);
}

export const UI_HEADERS = {
  'content-security-policy': "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'",
  'x-content-type-options': 'nosniff',
  // The files change only with the gateway's version, but an admin page is small: never cached,
  // so an upgrade is seen at once.
  'cache-control': 'no-store',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
} as const;
