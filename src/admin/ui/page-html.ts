/**
 * The dashboard page: layout, the "Admin token" field, no inline script (CSP `default-src 'self'`).
 * Kept as a string module so it reaches dist/ and the image with the compiled code (no build
 * step, no CDN); test/unit/admin-dashboard.test.ts checks it (the script parses, the
 * markup has no inline script). Written without backticks or dollar-brace, which String.raw would take.
 */
export const PAGE_HTML = String.raw`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>cgw dashboard</title>
<link rel="icon" href="/ui/icon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/ui/app.css">
<script src="/ui/app.js" defer></script>
</head>
<body>
<header>
<h1>cgw dashboard</h1>
<nav aria-label="Pages">
<ul>
<li><a href="#/">Overview</a></li>
<li><a href="#/services">Services</a></li>
<li><a href="#/routes">Routes</a></li>
<li><a href="#/policies">Policies</a></li>
<li><a href="#/consumers">Consumers</a></li>
<li><a href="#/certs">Certificates</a></li>
<li><a href="#/rollouts">Rollouts</a></li>
<li><a href="#/fleet">Fleet</a></li>
</ul>
</nav>
<form id="token-form" class="token" autocomplete="off">
<label for="admin-token">Admin token</label>
<input id="admin-token" type="password" autocomplete="off" spellcheck="false">
<button id="forget-token" type="button">Forget token</button>
</form>
<p id="live" role="status">Live updates: starting</p>
</header>
<p id="notice" role="alert"></p>
<main id="view" tabindex="-1">
<noscript>The dashboard needs JavaScript; the same data is at /v1/status, /v1/services and the other /v1 endpoints.</noscript>
</main>
</body>
</html>
`;
