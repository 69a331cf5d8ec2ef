/**
 * The dashboard as a person uses it, in a real headless Chromium (playwright-core driving Debian's
 * `chromium`): the pages show what the admin API says; saving canary weights without the admin
 * token, or with a wrong one, is refused and the refusal is shown; with the token typed into the
 * "Admin token" field, v1=0 v2=100 set through the labelled fields and the named button moves the
 * proxy's traffic to v2 only; a new instance registered in Consul appears on the endpoints page
 * without a reload. Locators go by label and role, so the page's accessibility is what is tested.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { Agent, request } from 'undici';
import { startConsul, type ConsulAgent } from '../helpers/consul.ts';
import { runCli, startGateway, waitFor, type GatewayProcess } from '../helpers/gateway.ts';
import { startUpstream, type Upstream } from '../helpers/upstream.ts';

const TOKEN = 'dashboard-browser-token-0123456789';
const UI_TIMEOUT_MS = 30_000;

/** Debian's chromium; the test fails (never skips) without it. */
function chromiumPath(): string {
  const found = [process.env.CHROMIUM_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p): p is string => typeof p === 'string' && p !== '' && existsSync(p));
  if (!found) throw new Error("no Chromium at /usr/bin/chromium or /usr/bin/chromium-browser: install Debian's `chromium` package (apt-get install chromium), or set CHROMIUM_PATH");
  return found;
}

let consul: ConsulAgent;
let gw: GatewayProcess;
let browser: Browser;
let page: Page;
const ups: Upstream[] = [];
const client = new Agent({ keepAliveTimeout: 10_000, connections: 4 });
/** Script errors and Content-Security-Policy refusals the page met (a broken page fails the test). */
const pageErrors: string[] = [];

async function adminJson<T>(path: string): Promise<T> {
  const r = await request(`${gw.adminUrl}${path}`, { dispatcher: client });
  return (await r.body.json()) as T;
}

async function upstreamOf(): Promise<string> {
  const r = await request(`${gw.url}/web`, { dispatcher: client, headersTimeout: 10_000, bodyTimeout: 10_000 });
  await r.body.text();
  return r.statusCode === 200 ? String(r.headers['x-upstream']) : `status ${r.statusCode}`;
}

before(async () => {
  const executablePath = chromiumPath();
  consul = await startConsul();
  for (const v of ['v1', 'v2']) {
    const u = await startUpstream(`web-${v}`);
    ups.push(u);
    await consul.register({ id: `web-${v}`, name: 'web', port: u.port, tags: ['urlprefix-/web', v] });
  }
  gw = await startGateway({ consul: consul.addr, args: ['--wait', '5s', '--admin-token', TOKEN] });
  await waitFor(async () => (await upstreamOf()).startsWith('web-'), { timeoutMs: 20_000, message: 'web routed' });
  browser = await chromium.launch({ executablePath, args: ['--no-sandbox', '--headless=new'], timeout: 60_000 });
  page = await browser.newPage();
  page.setDefaultTimeout(UI_TIMEOUT_MS);
  page.on('pageerror', (err) => pageErrors.push(err.message));
  page.on('console', (m) => {
    // Failed loads are judged below by their address and status.
    if (m.type() === 'error' && !/^Failed to load resource/.test(m.text())) pageErrors.push(m.text());
  });
  page.on('response', (r) => {
    // The refused saves answer 401 on purpose; anything else failing is a broken page.
    if (r.status() >= 400 && !(r.status() === 401 && r.request().method() === 'PUT')) pageErrors.push(`${r.status()} ${r.request().method()} ${r.url()}`);
  });
});

after(async () => {
  await browser?.close();
  await gw?.kill();
  await client.close();
  await Promise.all(ups.map((u) => u.close()));
  await consul?.destroy();
});

test('the services, routes and endpoints pages show what the admin API says', async () => {
  const services = await adminJson<{ name: string; endpointsHealthy: number; endpointsTotal: number }[]>('/v1/services');
  const web = services.find((s) => s.name === 'web');
  assert.ok(web);
  await page.goto(`${gw.adminUrl}/ui#/services`);
  const table = page.getByRole('table', { name: 'Services' });
  const row = table.getByRole('row').filter({ has: page.getByRole('link', { name: 'web', exact: true }) });
  await row.getByRole('cell', { name: `${web.endpointsHealthy} / ${web.endpointsTotal}`, exact: true }).waitFor();

  await page.getByRole('link', { name: 'Routes', exact: true }).click();
  const routes = await adminJson<{ route: string; service: string }[]>('/v1/routes');
  assert.ok(routes.length > 0);
  for (const r of routes) await page.getByRole('table', { name: 'Routes' }).getByRole('rowheader', { name: r.route, exact: true }).waitFor();

  // The other pages of the menu open (any script error fails the last test).
  for (const [link, heading] of [['Policies', 'Policies'], ['Consumers', 'Consumers'], ['Certificates', 'Certificates'], ['Overview', 'Overview']]) {
    await page.getByRole('link', { name: link, exact: true }).click();
    await page.getByRole('heading', { name: heading, exact: true }).waitFor();
  }

  await page.getByRole('link', { name: 'Services', exact: true }).click();
  await page.getByRole('link', { name: 'web', exact: true }).click();
  await page.getByRole('heading', { name: 'Service web' }).waitFor();
  const endpoints = await adminJson<{ id: string; status: string }[]>('/v1/services/web/endpoints');
  const endpointTable = page.getByRole('table', { name: 'Endpoints of web' });
  for (const e of endpoints) {
    await endpointTable.getByRole('row').filter({ has: page.getByRole('rowheader', { name: e.id, exact: true }) }).getByRole('cell', { name: e.status, exact: true }).waitFor();
  }
  // Parts of a page that do not apply leave nothing behind (no stray "null" or "undefined").
  const stray = await page.locator('#view').evaluate((view) => {
    const walker = view.ownerDocument.createTreeWalker(view, 4 /* NodeFilter.SHOW_TEXT */);
    const found: string[] = [];
    for (let n = walker.nextNode(); n; n = walker.nextNode()) if (/^(null|undefined)$/.test((n.textContent ?? '').trim())) found.push(n.textContent ?? '');
    return found;
  });
  assert.deepEqual(stray, []);
});

test('saving weights is refused without the token and with a wrong one; with it, v1=0 v2=100 moves the traffic to v2', async () => {
  await page.goto(`${gw.adminUrl}/ui#/service/web`);
  await page.getByRole('heading', { name: 'Service web' }).waitFor();
  const v1 = page.getByLabel('Weight of subset v1');
  const v2 = page.getByLabel('Weight of subset v2');
  const save = page.getByRole('button', { name: 'Save weights' });
  const notice = page.getByRole('alert');

  await v1.fill('0');
  await v2.fill('100');
  await save.click();
  await notice.filter({ hasText: /Not saved: 401 unauthorized/ }).waitFor();

  await page.getByLabel('Admin token').fill('a-wrong-token-of-enough-length');
  await save.click();
  await notice.filter({ hasText: /the admin token does not match/ }).waitFor();
  assert.equal(await consul.kvGet('gateway/canary/web'), null, 'a refused save wrote nothing');

  await page.getByLabel('Admin token').fill(TOKEN);
  // Enter applies the token without leaving the page (keyboard use).
  await page.getByLabel('Admin token').press('Enter');
  await notice.filter({ hasText: 'Admin token set for this tab.' }).waitFor();
  assert.match(page.url(), /\/ui#\/service\/web$/);
  await v1.fill('0');
  await v2.fill('100');
  await save.click();
  await notice.filter({ hasText: /Saved weights of web/ }).waitFor();
  assert.deepEqual(JSON.parse((await consul.kvGet('gateway/canary/web'))?.value ?? 'null'), { weights: { v1: 0, v2: 100 } });

  // The traffic moved: once the gateway applied the weights, every request reaches v2.
  await waitFor(
    async () => {
      for (let i = 0; i < 20; i++) if ((await upstreamOf()) !== 'web-v2') return false;
      return true;
    },
    { timeoutMs: 20_000, message: '20 requests in a row reach web-v2' },
  );
  // And the page shows the weights in force.
  await page.getByRole('table', { name: 'Canary subsets of web' }).getByRole('row').filter({ has: page.getByRole('rowheader', { name: 'v2', exact: true }) }).getByRole('cell', { name: '100', exact: true }).first().waitFor();

  // Clearing goes through Consul the same way (check-and-set on the index the page read).
  await page.getByRole('button', { name: 'Clear weights' }).click();
  await notice.filter({ hasText: 'Cleared weights of web.' }).waitFor();
  assert.equal(await consul.kvGet('gateway/canary/web'), null);
  await page.getByText('web has no canary weights: every endpoint shares the traffic.').waitFor();
});

test('a new instance registered in Consul appears on the endpoints page without a reload', async () => {
  await page.goto(`${gw.adminUrl}/ui#/service/web`);
  await page.getByRole('heading', { name: 'Service web' }).waitFor();
  // Gone after a reload: proves the update came through the open page.
  await page.evaluate(() => {
    (globalThis as unknown as { notReloaded: boolean }).notReloaded = true;
  });
  const u = await startUpstream('web-v3');
  ups.push(u);
  await consul.register({ id: 'web-v3', name: 'web', port: u.port, tags: ['urlprefix-/web', 'v2'] });
  await page.getByRole('table', { name: 'Endpoints of web' }).getByRole('rowheader', { name: 'web-v3', exact: true }).waitFor();
  assert.equal(await page.evaluate(() => (globalThis as unknown as { notReloaded?: boolean }).notReloaded), true);
  await page.getByRole('status').filter({ hasText: /Live updates: connected/ }).waitFor();
});

test('service names from Consul are shown as text, never run as markup', async () => {
  const u = await startUpstream('hostile');
  ups.push(u);
  const name = 'x<img src=x onerror=window.pwned=1>';
  await consul.register({ id: 'hostile-1', name, port: u.port, tags: ['urlprefix-/hostile', '<b>v1</b>'] });
  await page.goto(`${gw.adminUrl}/ui#/services`);
  await page.getByRole('link', { name, exact: true }).waitFor();
  assert.equal(await page.evaluate(() => (globalThis as unknown as { pwned?: number }).pwned), undefined);
  assert.equal(await page.locator('img').count(), 0);
});

test('the overview, rollouts and fleet pages show what the CLI shows, and a rollout is paused by its named button', async () => {
  await page.goto(`${gw.adminUrl}/ui#/`);
  await page.getByRole('heading', { name: 'Overview' }).waitFor();
  // The version shown is the one /v1/status reports (polled: a health change may publish another).
  await waitFor(
    async () => {
      const status = await adminJson<{ snapshot: { version: string } }>('/v1/status');
      return (await page.locator('dt:text-is("Snapshot version") + dd').textContent()) === status.snapshot.version;
    },
    { timeoutMs: 20_000, message: 'the overview shows the snapshot version of /v1/status' },
  );

  // This test stands alone: the token is typed in again (it is kept per tab anyway).
  await page.getByLabel('Admin token').fill(TOKEN);
  const started = await runCli(['rollout', 'start', 'web', '--canary', 'v2', '--stable', 'v1', '--steps', '20,100', '--soak', '10m', '--consul', consul.addr]);
  assert.equal(started.code, 0, started.stderr);
  await page.getByRole('link', { name: 'Rollouts', exact: true }).click();
  await page.getByRole('heading', { name: 'Rollout of web' }).waitFor();
  await page.getByRole('table', { name: 'History of web' }).getByRole('cell', { name: 'started', exact: true }).waitFor();
  await page.getByRole('table', { name: 'Figures of web in the current window' }).getByRole('rowheader', { name: 'v2 (canary)', exact: true }).waitFor();
  await page.getByRole('button', { name: 'Pause rollout of web' }).click();
  await page.getByRole('alert').filter({ hasText: 'Rollout of web: paused.' }).waitFor();
  const cli = await runCli(['rollout', 'status', 'web', '--json', '--consul', consul.addr]);
  const stored = JSON.parse(cli.stdout) as { rollout: { state: string; history: { event: string }[] } };
  assert.equal(stored.rollout.state, 'paused');
  assert.equal(stored.rollout.history.at(-1)?.event, 'paused');
  await page.getByRole('definition').filter({ hasText: /^paused$/ }).waitFor();

  const fleet = JSON.parse((await runCli(['fleet', '--json', '--consul', consul.addr])).stdout) as { gateways: { gatewayId: string | null; id: string }[] };
  assert.ok(fleet.gateways.length > 0);
  await page.getByRole('link', { name: 'Fleet', exact: true }).click();
  for (const g of fleet.gateways) await page.getByRole('table', { name: 'Gateways' }).getByRole('rowheader', { name: g.gatewayId ?? g.id, exact: true }).waitFor();
});

test('the page met no script error and no Content-Security-Policy refusal', () => {
  assert.deepEqual(pageErrors, []);
});
