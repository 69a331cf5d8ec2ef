/**
 * The dashboard's script: hash routes over the admin API's JSON, the event stream, the controls.
 * Kept as a string module so it reaches dist/ and the image with the compiled code (no build
 * step, no CDN); test/unit/admin-dashboard.test.ts checks it (the script parses, the
 * markup has no inline script). Written without backticks or dollar-brace, which String.raw would take.
 */
export const PAGE_JS = String.raw`'use strict';
// cgw dashboard: plain DOM, no framework. Every value from the API goes in through textContent
// (never parsed as markup): service names, tags and messages come from Consul and may be hostile.
(function () {
  var TOKEN_KEY = 'cgw-admin-token';
  var view = document.getElementById('view');
  var notice = document.getElementById('notice');
  var live = document.getElementById('live');
  var tokenField = document.getElementById('admin-token');
  var forget = document.getElementById('forget-token');
  var renderedFor = null;
  var refreshing = false;
  var refreshAgain = false;

  // ----- helpers -------------------------------------------------------------------------------

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (name) {
        var value = attrs[name];
        if (value === undefined || value === null || value === false) return;
        if (name === 'text') node.textContent = String(value);
        else if (name === 'onclick') node.addEventListener('click', value);
        else if (name === 'onsubmit') node.addEventListener('submit', value);
        else node.setAttribute(name, value === true ? '' : String(value));
      });
    }
    (children || []).forEach(function (child) {
      if (child === null || child === undefined) return;
      node.appendChild(typeof child === 'object' ? child : document.createTextNode(String(child)));
    });
    return node;
  }

  function text(value) {
    if (value === null || value === undefined || value === '') return '-';
    if (Array.isArray(value)) return value.length ? value.map(text).join(', ') : '-';
    if (typeof value === 'object') return JSON.stringify(value);
    return String(value);
  }

  function table(caption, headers, rows) {
    if (!rows.length) return el('p', { text: caption + ': none' });
    var head = el('tr', null, headers.map(function (h) { return el('th', { scope: 'col', text: h }); }));
    var body = rows.map(function (row) {
      return el('tr', null, row.map(function (cell, i) {
        var content = cell !== null && typeof cell === 'object' && cell.nodeType ? cell : document.createTextNode(text(cell));
        return i === 0 ? el('th', { scope: 'row' }, [content]) : el('td', null, [content]);
      }));
    });
    return el('div', { class: 'scroll' }, [el('table', null, [el('caption', { text: caption }), el('thead', null, [head]), el('tbody', null, body)])]);
  }

  function facts(pairs) {
    return el('dl', { class: 'facts' }, pairs.reduce(function (out, p) {
      out.push(el('dt', { text: p[0] }));
      out.push(el('dd', { text: text(p[1]) }));
      return out;
    }, []));
  }

  function link(hash, label) {
    return el('a', { href: hash, text: label });
  }

  function age(iso) {
    var ms = Date.now() - Date.parse(iso);
    if (!isFinite(ms)) return '-';
    var s = Math.max(0, Math.round(ms / 1000));
    if (s < 120) return s + ' s ago';
    if (s < 7200) return Math.round(s / 60) + ' min ago';
    return Math.round(s / 3600) + ' h ago';
  }

  function token() {
    try { return sessionStorage.getItem(TOKEN_KEY) || ''; } catch (e) { return ''; }
  }

  function headers(extra) {
    var h = extra || {};
    var t = token();
    if (t) h.Authorization = 'Bearer ' + t;
    return h;
  }

  function say(message, kind) {
    notice.textContent = message;
    notice.className = kind || '';
  }

  function errorText(status, body) {
    var e = body && body.error;
    var message = e && e.message ? e.message : 'HTTP ' + status;
    return status + ' ' + (e && e.code ? e.code + ': ' : '') + message;
  }

  function api(path, options) {
    var o = options || {};
    return fetch(path, { method: o.method || 'GET', headers: headers(o.body ? { 'Content-Type': 'application/json' } : {}), body: o.body, cache: 'no-store' })
      .then(function (res) {
        return res.text().then(function (t) {
          var body = null;
          try { body = t ? JSON.parse(t) : null; } catch (e) { body = null; }
          if (!res.ok) {
            var err = new Error(errorText(res.status, body));
            err.status = res.status;
            throw err;
          }
          return body;
        });
      });
  }

  // ----- pages ---------------------------------------------------------------------------------

  var pages = {
    '': overview,
    services: services,
    service: serviceDetail,
    routes: routes,
    policies: policies,
    consumers: consumers,
    certs: certs,
    rollouts: rollouts,
    fleet: fleet,
  };

  function route() {
    var parts = location.hash.replace(/^#\/?/, '').split('/');
    var name = parts[0] || '';
    var arg = parts.length > 1 ? decodeURIComponent(parts.slice(1).join('/')) : null;
    return { name: Object.prototype.hasOwnProperty.call(pages, name) ? name : '', arg: arg, key: location.hash };
  }

  function show(nodes, title) {
    document.title = title + ' - cgw dashboard';
    var current = '#/' + (route().name === 'service' ? 'services' : route().name);
    document.querySelectorAll('nav a').forEach(function (a) {
      if (a.getAttribute('href') === current) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    });
    // Parts a page leaves out are null; replaceChildren would show them as the text "null".
    view.replaceChildren.apply(view, nodes.filter(function (n) { return n !== null && n !== undefined; }));
  }

  function overview() {
    return Promise.all([api('/v1/status'), api('/v1/watches')]).then(function (r) {
      var s = r[0];
      var w = r[1];
      var snap = s.snapshot;
      var c = s.consul;
      return [
        el('h2', { text: 'Overview' }),
        facts([
          ['Ready', s.ready ? 'yes' : 'no'],
          ['Snapshot version', snap ? snap.version : 'none yet'],
          ['Snapshot applied', snap ? snap.appliedAt + ' (' + age(snap.appliedAt) + ')' : null],
          ['Services / routes', snap ? snap.services + ' / ' + snap.routes : null],
          ['Consul health mode', c.healthMode],
          ['Watches', c.watches + (c.watchesFailing.length ? ', ' + c.watchesFailing.length + ' failing' : ', none failing')],
          ['Consul leader known', c.leaderKnown === null ? 'unknown' : c.leaderKnown ? 'yes' : 'no'],
          ['Consul refusing connections', c.refusing ? 'since ' + c.refusing.since : 'no'],
          ['Rate limiter (Redis)', s.rateLimiter.backend],
          ['Configuration stale', s.buildFailure ? 'yes: ' + text(s.buildFailure) : 'no'],
          ['Registration', s.registration ? s.registration.state : null],
          ['Workers', s.workers ? s.workers.length : 'one process'],
          ['Circuits not closed', s.circuitsNotClosed],
          ['Uptime', s.uptimeSeconds + ' s'],
        ]),
        el('h3', { text: 'Problems' }),
        table('Problems', ['Kind', 'Subject', 'Message'], s.problems.map(function (p) { return [p.kind, p.subject, p.message]; })),
        el('h3', { text: 'Watches' }),
        table('Consul watches', ['Watch', 'State', 'Index', 'Requests', 'Errors', 'Last error'], w.watches.map(function (x) {
          return [x.name, x.state, x.index, x.requests, x.errors, x.lastError];
        })),
      ];
    });
  }

  function shares(canary) {
    if (!canary) return null;
    return Object.keys(canary).map(function (tag) { return tag + ' ' + canary[tag] + '%'; }).join(', ');
  }

  function services() {
    return api('/v1/services').then(function (list) {
      return [
        el('h2', { text: 'Services' }),
        table('Services', ['Service', 'Healthy / total', 'Routes', 'Canary shares', 'Circuit', 'Ejected', 'Discovery'], list.map(function (s) {
          return [link('#/service/' + encodeURIComponent(s.name), s.name), s.endpointsHealthy + ' / ' + s.endpointsTotal, s.routes, shares(s.canary), s.circuit ? s.circuit.state : 'closed', s.ejected, s.discovery];
        })),
      ];
    });
  }

  /** Each endpoint's share of the service's traffic: its subset's effective weight split by endpoint weight. */
  function trafficShares(endpoints, canary) {
    var share = {};
    var live = endpoints.filter(function (e) { return e.receivesTraffic && !e.ejected; });
    function split(group, total) {
      var sum = group.reduce(function (a, e) { return a + e.weight; }, 0);
      group.forEach(function (e) { share[e.id] = (share[e.id] || 0) + (sum > 0 ? total * e.weight / sum : 0); });
    }
    if (canary && canary.subsets) {
      canary.subsets.forEach(function (x) {
        split(live.filter(function (e) { return e.subsets.indexOf(x.tag) >= 0; }), x.effective);
      });
    } else {
      split(live, 100);
    }
    return share;
  }

  function serviceDetail(name) {
    return Promise.all([api('/v1/services/' + encodeURIComponent(name) + '/endpoints'), api('/v1/canary')]).then(function (r) {
      var endpoints = r[0];
      var canary = r[1].filter(function (c) { return c.service === name; })[0] || null;
      var share = trafficShares(endpoints, canary);
      return [
        el('h2', { text: 'Service ' + name }),
        el('p', null, [link('#/services', 'All services')]),
        el('h3', { text: 'Endpoints' }),
        table('Endpoints of ' + name, ['Endpoint', 'Address', 'Health', 'Traffic share', 'Weight', 'Subsets', 'In flight', 'Ejected', 'Tags'], endpoints.map(function (e) {
          return [e.id, e.address + ':' + e.port, e.status, e.receivesTraffic ? (Math.round((share[e.id] || 0) * 10) / 10) + '%' : 'none', e.weight, e.subsets, e.inflight, e.ejected ? 'until ' + e.ejectedUntil : 'no', e.tags];
        })),
        el('h3', { text: 'Canary weights' }),
        canary
          ? table('Canary subsets of ' + name, ['Subset', 'Configured', 'Effective', 'Endpoints'], canary.subsets.map(function (x) { return [x.tag, x.configured, x.effective, x.endpoints]; }))
          : el('p', { text: name + ' has no canary weights: every endpoint shares the traffic.' }),
        canary && canary.rejected.length ? el('p', { class: 'bad', text: 'Refused: ' + canary.rejected.join('; ') }) : null,
        canaryForm(name, endpoints, canary),
      ];
    });
  }

  /** One labelled field per subset; the ModifyIndex read with the page goes with the write (check-and-set). */
  function canaryForm(name, endpoints, canary) {
    var tags = canary ? canary.subsets.map(function (x) { return x.tag; }) : [];
    endpoints.forEach(function (e) {
      e.tags.forEach(function (t) { if (!/^urlprefix-/.test(t) && tags.indexOf(t) < 0) tags.push(t); });
    });
    var index = canary ? canary.modifyIndex : 0;
    var fields = tags.map(function (tag, i) {
      var id = 'weight-' + i;
      var current = canary && canary.weights && Object.prototype.hasOwnProperty.call(canary.weights, tag) ? canary.weights[tag] : 0;
      return el('div', { class: 'field' }, [
        el('label', { for: id, text: 'Weight of subset ' + tag + ' (%)' }),
        el('input', { id: id, type: 'number', min: '0', max: '100', step: '1', inputmode: 'numeric', value: current, 'data-tag': tag }),
      ]);
    });
    var form = el('form', { class: 'controls', 'aria-label': 'Canary weights of ' + name }, [
      el('p', { text: tags.length ? 'Weights in percent, summing to 100 (needs the admin token). Written with check-and-set on ModifyIndex ' + index + '.' : 'No subset tags on the instances of ' + name + '.' }),
    ].concat(fields, [
      el('button', { type: 'submit', text: 'Save weights' }),
      canary ? el('button', { type: 'button', text: 'Clear weights', onclick: function () { clearWeights(name, index); } }) : null,
    ]));
    form.addEventListener('submit', function (event) {
      event.preventDefault();
      var weights = {};
      var bad = null;
      form.querySelectorAll('input[data-tag]').forEach(function (input) {
        var value = input.value.trim();
        if (!/^\d+$/.test(value)) bad = bad || 'the weight of ' + input.getAttribute('data-tag') + ' must be a whole number from 0 to 100';
        weights[input.getAttribute('data-tag')] = Number(value);
      });
      if (bad) return say('Not saved: ' + bad, 'bad');
      say('Saving weights of ' + name + '...', '');
      api('/v1/canary/' + encodeURIComponent(name), { method: 'PUT', body: JSON.stringify({ weights: weights, modifyIndex: index }) }).then(
        function (done) { say('Saved weights of ' + name + ' (ModifyIndex ' + done.modifyIndex + '); the gateway applies them when Consul reports the change.', 'good'); rerender(); },
        function (err) { say('Not saved: ' + err.message, 'bad'); },
      );
    });
    return form;
  }

  function clearWeights(name, index) {
    say('Clearing weights of ' + name + '...', '');
    api('/v1/canary/' + encodeURIComponent(name), { method: 'DELETE', body: JSON.stringify({ modifyIndex: index }) }).then(
      function () { say('Cleared weights of ' + name + '.', 'good'); rerender(); },
      function (err) { say('Not cleared: ' + err.message, 'bad'); },
    );
  }

  function routes() {
    return api('/v1/routes').then(function (list) {
      return [
        el('h2', { text: 'Routes' }),
        table('Routes', ['Route', 'Host', 'Path', 'Service', 'Source', 'Origin', 'Policies', 'Healthy endpoints', 'Held'], list.map(function (r) {
          return [r.route, r.host, r.path, r.service, r.source, r.origin, r.policies, r.endpointsHealthy, r.heldBy ? r.heldBy + (r.holdReason ? ': ' + r.holdReason : '') : 'no'];
        })),
      ];
    });
  }

  function policies() {
    return api('/v1/policies').then(function (list) {
      return [
        el('h2', { text: 'Policies' }),
        table('Policy and route documents', ['Document', 'Kind', 'Applied', 'Target', 'Version', 'Source', 'Refused'], list.map(function (p) {
          return [p.id, p.kind, p.applied ? 'yes' : 'no', p.target, p.version, p.source, p.rejected ? p.rejected.error : null];
        })),
      ];
    });
  }

  function consumers() {
    return api('/v1/consumers').then(function (list) {
      return [
        el('h2', { text: 'Consumers' }),
        table('Consumers (keys are never shown)', ['Consumer', 'Plan', 'Scopes', 'Limits', 'ModifyIndex'], list.map(function (c) {
          return [c.id, c.plan, c.scopes, c.limits, c.modifyIndex];
        })),
      ];
    });
  }

  function certs() {
    return api('/v1/certs').then(function (tls) {
      return [
        el('h2', { text: 'Certificates' }),
        facts([['Default certificate', tls.default]]),
        table('Certificates in force', ['Certificate', 'Names', 'Expires', 'Days left', 'Source', 'Subject'], tls.certificates.map(function (c) {
          return [c.name, c.names, c.notAfter, Math.floor((c.expiresAtMs - Date.now()) / 86400000), c.source, c.subject];
        })),
        table('Certificates refused', ['Certificate', 'Source', 'Error', 'At', 'Last good kept'], tls.rejected.map(function (c) {
          return [c.name, c.source, c.error, c.at, c.keptLastGood ? 'yes' : 'no'];
        })),
      ];
    });
  }

  function rollouts() {
    return api('/v1/rollouts').then(function (list) {
      var out = [el('h2', { text: 'Rollouts' })];
      if (!list.length) out.push(el('p', { text: 'No rollouts in Consul KV.' }));
      list.forEach(function (s) {
        var r = s.rollout;
        out.push(el('h3', { text: 'Rollout of ' + s.service }));
        if (!r) {
          out.push(el('p', { class: 'bad', text: 'Invalid rollout at ' + s.key + ' (ModifyIndex ' + s.modifyIndex + '): ' + s.invalid }));
          return;
        }
        var share = r.steps[r.step] || 0;
        out.push(facts([
          ['State', r.state],
          ['Step', (r.step + 1) + ' of ' + r.steps.length + ' (' + r.steps.join(', ') + ')'],
          ['Weights', r.canary + ' ' + share + '%, ' + r.stable + ' ' + (100 - share) + '%'],
          ['Soak left', s.soakLeftSeconds === null ? null : s.soakLeftSeconds + ' s'],
          ['Figures since', s.figures ? s.figures.window + ' from ' + s.figures.gateways + ' gateway(s)' : null],
          ['Now', s.figures ? s.figures.verdict : null],
        ]));
        if (s.figures) {
          out.push(table('Figures of ' + s.service + ' in the current window', ['Subset', 'Requests', '5xx', 'Error rate', 'p95'], s.figures.subsets.map(function (x) {
            return [x.subset, x.requests, x.errors, x.errorRate + '%', x.p95Ms === null ? null : x.p95Ms + ' ms'];
          })));
        }
        out.push(table('History of ' + s.service, ['At', 'Event', 'Step', 'Weight', 'By', 'Reason'], r.history.map(function (h) {
          return [h.at, h.event, h.step + 1, h.weight, h.by, h.reason];
        })));
        out.push(el('div', { class: 'controls' }, ['pause', 'resume', 'abort', 'promote'].map(function (action) {
          var label = action.charAt(0).toUpperCase() + action.slice(1) + ' rollout of ' + s.service;
          return el('button', { type: 'button', text: label, onclick: function () { rolloutAction(s.service, action); } });
        })));
      });
      return out;
    });
  }

  function rolloutAction(service, action) {
    say(action + ' the rollout of ' + service + '...', '');
    api('/v1/rollouts/' + encodeURIComponent(service) + '/' + action, { method: 'POST' }).then(
      function (done) { say('Rollout of ' + service + ': ' + done.rollout.state + '.', 'good'); rerender(); },
      function (err) { say('Not done: ' + err.message, 'bad'); },
    );
  }

  function fleet() {
    return api('/v1/fleet').then(function (f) {
      return [
        el('h2', { text: 'Fleet' }),
        facts([
          ['Service', f.service],
          ['Fleet snapshot', f.fleetSnapshot],
          ['Consul catalog index', f.consulIndex],
          ['Lagging / critical / invalid', f.counts.lagging + ' / ' + f.counts.critical + ' / ' + f.counts.invalid],
        ]),
        table('Gateways', ['Gateway', 'Address', 'Version', 'Snapshot', 'Applied index', 'Behind', 'Lag', 'Health', 'State', 'Reasons'], f.gateways.map(function (g) {
          return [g.gatewayId || g.id, g.address, g.version, g.snapshot, g.appliedIndex, g.indexesBehind, g.lagSeconds === null ? null : g.lagSeconds.toFixed(1) + ' s', g.health, g.state.toUpperCase(), g.reasons];
        })),
      ];
    });
  }

  // ----- rendering and live updates ------------------------------------------------------------

  // A press on a button that is replaced before it is released never becomes a click: a soft
  // refresh waits while a pointer is down or a field of the page has the focus.
  var pointerDown = false;
  document.addEventListener('pointerdown', function () { pointerDown = true; }, true);
  document.addEventListener('pointerup', function () { setTimeout(function () { pointerDown = false; }, 0); }, true);
  document.addEventListener('pointercancel', function () { pointerDown = false; }, true);

  function busy() {
    var active = document.activeElement;
    return pointerDown || (active !== null && view.contains(active) && active.tagName === 'INPUT');
  }

  /** Draws the page again with fresh data; a soft refresh leaves a form being used alone. */
  function rerender(soft) {
    if (refreshing) { refreshAgain = true; return; }
    var r = route();
    if (soft && renderedFor === r.key && busy()) return;
    refreshing = true;
    var page = pages[r.name];
    var title = r.name || 'overview';
    (r.name === 'service' ? page(r.arg || '') : page()).then(
      function (nodes) {
        if (soft && renderedFor === r.key && busy()) {
          setTimeout(function () { rerender(true); }, 250);
          return;
        }
        // A soft refresh keeps the weights typed so far.
        var typed = {};
        if (soft && renderedFor === r.key) view.querySelectorAll('input[data-tag]').forEach(function (i) { typed[i.id] = i.value; });
        show(nodes, title);
        Object.keys(typed).forEach(function (id) { var i = document.getElementById(id); if (i) i.value = typed[id]; });
        renderedFor = r.key;
      },
      function (err) {
        show([el('h2', { text: title }), el('p', { class: 'bad', role: 'alert', text: 'Could not load: ' + err.message + (err.status === 401 ? ' (enter the admin token above)' : '') })], title);
        renderedFor = r.key;
      },
    ).then(function () {
      refreshing = false;
      if (refreshAgain) { refreshAgain = false; rerender(true); }
    });
  }

  var stream = null;
  var retryMs = 3000;

  /**
   * The event stream over fetch() rather than EventSource: EventSource cannot send the
   * Authorization header, and the token must not go into a URL (logs, history).
   */
  function connect() {
    if (stream) stream.abort();
    var controller = new AbortController();
    stream = controller;
    live.textContent = 'Live updates: connecting';
    fetch('/v1/events', { headers: headers({ Accept: 'text/event-stream' }), cache: 'no-store', signal: controller.signal }).then(function (res) {
      if (!res.ok || !res.body) {
        live.textContent = 'Live updates: refused (' + res.status + (res.status === 401 ? ', enter the admin token' : '') + ')';
        return later();
      }
      live.textContent = 'Live updates: connected';
      var reader = res.body.getReader();
      var decoder = new TextDecoder();
      var buffer = '';
      function pump() {
        return reader.read().then(function (chunk) {
          if (chunk.done) return later();
          buffer += decoder.decode(chunk.value, { stream: true });
          var cut;
          while ((cut = buffer.indexOf('\n\n')) >= 0) {
            handle(buffer.slice(0, cut));
            buffer = buffer.slice(cut + 2);
          }
          return pump();
        });
      }
      return pump();
    }).catch(function () {
      if (stream === controller) later();
    });
    function later() {
      if (stream !== controller) return;
      live.textContent = 'Live updates: reconnecting';
      setTimeout(function () { if (stream === controller) connect(); }, retryMs);
    }
  }

  function handle(block) {
    var event = 'message';
    var data = '';
    block.split('\n').forEach(function (line) {
      if (line.indexOf('event:') === 0) event = line.slice(6).trim();
      else if (line.indexOf('data:') === 0) data += line.slice(5).trim();
      else if (line.indexOf('retry:') === 0) retryMs = Math.max(1000, Number(line.slice(6)) || 3000);
    });
    var parsed = null;
    try { parsed = data ? JSON.parse(data) : null; } catch (e) { parsed = null; }
    if (event === 'snapshot' || event === 'hello') {
      live.textContent = 'Live updates: connected, snapshot ' + (parsed && parsed.version ? parsed.version : 'none');
    }
    // A hello after a reconnect: snapshots may have come and gone meanwhile.
    if (event === 'snapshot' || event === 'tick' || event === 'hello') rerender(true);
  }

  tokenField.value = token();
  tokenField.addEventListener('input', function () {
    try { sessionStorage.setItem(TOKEN_KEY, tokenField.value.trim()); } catch (e) { /* storage off: the token lasts this page */ }
  });
  tokenField.addEventListener('change', function () { connect(); rerender(true); });
  // Enter in the token field applies it; the form must not submit (that would reload the page).
  document.getElementById('token-form').addEventListener('submit', function (event) {
    event.preventDefault();
    say('Admin token set for this tab.', '');
    connect();
    rerender(true);
  });
  forget.addEventListener('click', function () {
    try { sessionStorage.removeItem(TOKEN_KEY); } catch (e) { /* nothing kept */ }
    tokenField.value = '';
    say('Admin token forgotten.', '');
    connect();
  });
  window.addEventListener('hashchange', function () { say('', ''); rerender(false); });
  rerender(false);
  connect();
})();
`;
