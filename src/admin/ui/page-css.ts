/**
 * The dashboard's style: readable on a phone (one column below 40rem, tables scroll sideways).
 * Kept as a string module so it reaches dist/ and the image with the compiled code (no build
 * step, no CDN); test/unit/admin-dashboard.test.ts checks it (the script parses, the
 * markup has no inline script). Written without backticks or dollar-brace, which String.raw would take.
 */
export const PAGE_CSS = String.raw`:root { color-scheme: light dark; --accent: #1d5fb4; --bad: #b3261e; --good: #1b6e2d; font-family: system-ui, sans-serif; }
body { margin: 0 auto; max-width: 80rem; padding: 0 1rem 2rem; line-height: 1.4; }
header { border-bottom: 1px solid #8886; padding-bottom: 0.5rem; }
h1 { font-size: 1.4rem; margin: 0.8rem 0 0.4rem; }
h2 { font-size: 1.25rem; }
h3 { font-size: 1.05rem; margin-top: 1.5rem; }
nav ul { display: flex; flex-wrap: wrap; gap: 0.25rem 1rem; list-style: none; margin: 0; padding: 0; }
a { color: var(--accent); }
nav a[aria-current="page"] { font-weight: 700; text-decoration-thickness: 3px; }
@media (prefers-color-scheme: dark) { :root { --accent: #8ab4f8; --bad: #f2b8b5; --good: #a8dab5; } }
a:focus-visible, button:focus-visible, input:focus-visible { outline: 3px solid var(--accent); outline-offset: 2px; }
.token { display: flex; flex-wrap: wrap; align-items: center; gap: 0.5rem; margin: 0.6rem 0; }
input { font: inherit; padding: 0.3rem 0.4rem; min-width: 5rem; }
button { font: inherit; padding: 0.35rem 0.8rem; cursor: pointer; }
#live { font-size: 0.9rem; margin: 0.3rem 0; opacity: 0.85; }
#notice:empty { display: none; }
#notice { padding: 0.5rem 0.75rem; border-left: 4px solid var(--accent); }
#notice.bad, .bad { color: var(--bad); border-color: var(--bad); }
#notice.good { color: var(--good); border-color: var(--good); }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; min-width: 100%; }
caption { text-align: left; font-weight: 600; padding: 0.25rem 0; }
th, td { text-align: left; padding: 0.3rem 0.6rem; border-bottom: 1px solid #8884; vertical-align: top; overflow-wrap: break-word; max-width: 28rem; }
thead th { border-bottom: 2px solid #8888; white-space: nowrap; }
.facts { display: grid; grid-template-columns: max-content 1fr; gap: 0.2rem 1rem; }
.facts dt { font-weight: 600; }
.facts dd { margin: 0; overflow-wrap: anywhere; }
.controls { display: flex; flex-wrap: wrap; align-items: end; gap: 0.75rem; margin: 0.75rem 0; }
.controls p { flex-basis: 100%; margin: 0; }
.field { display: flex; flex-direction: column; gap: 0.2rem; }
@media (max-width: 40rem) {
  .facts { grid-template-columns: 1fr; }
  .facts dd { margin-bottom: 0.4rem; }
  th, td { padding: 0.25rem 0.4rem; }
}
`;
