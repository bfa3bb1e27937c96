// headroom dashboard. Plain JavaScript, no build step, no libraries: it
// reads the aggregator's JSON API and the live event stream /v1/events, and
// draws its charts as inline SVG.
//
// Every element a test or a person may want to find has a stable id or a
// data- attribute: figures carry their raw value in data-value.
'use strict';

(() => {

// ---------------------------------------------------------------------------
// Requests. Every request of the page goes through request(), and
// requestHeaders() is the one place that sets headers on them (the event
// stream included): with ACLs on, the token as Authorization: Bearer. The
// token is asked for when the server answers 401 and kept for this tab
// only (sessionStorage).

const TOKEN_KEY = 'headroom-token';

function requestHeaders(extra) {
  const h = new Headers(extra || {});
  if (!h.has('Accept')) h.set('Accept', 'application/json');
  const tok = sessionStorage.getItem(TOKEN_KEY);
  if (tok) h.set('Authorization', 'Bearer ' + tok);
  return h;
}

// askToken shows the token prompt once; a token entered reloads the page.
function askToken(why) {
  const b = document.getElementById('banner');
  if (!b.hidden && b.dataset.kind === 'token') return;
  const input = h('input', {id: 'token-input', type: 'password', autocomplete: 'off', placeholder: 'token secret', 'aria-label': 'token secret'});
  const use = () => {
    const v = input.value.trim();
    if (v) sessionStorage.setItem(TOKEN_KEY, v); else sessionStorage.removeItem(TOKEN_KEY);
    location.reload();
  };
  input.addEventListener('keydown', (e) => { if (e.key === 'Enter') use(); });
  fill(b, h('span', {text: why + ' '}), input, ' ', h('button', {id: 'token-use', type: 'button', onclick: use, text: 'use token'}));
  b.dataset.kind = 'token';
  b.hidden = false;
}

function request(path, opts) {
  const o = Object.assign({cache: 'no-store'}, opts || {});
  o.headers = requestHeaders(o.headers);
  return fetch(path, o);
}

class APIError extends Error {
  constructor(status, msg) { super(msg); this.status = status; }
}

// getJSON answers {data, headers} or throws an APIError.
async function getJSON(path) {
  const r = await request(path);
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  if (r.status === 401) askToken('This server needs a token (headroom token create --role reader).');
  if (!r.ok) throw new APIError(r.status, (body && body.error) || r.statusText);
  return {data: body, headers: r.headers};
}

// ---------------------------------------------------------------------------
// Live state kept in the page: the latest figures per tenant and, for the
// charts, the points of the last hour (from events and polls).

const HOUR = 3600 * 1000;
const MAX_POINTS = 4000;       // per tenant: events come at most once a second
const MAX_SERIES = 2000;       // tenants with a series kept
const LIST_PAGE = 500;         // tenants per request when the overview reads them all
const LIST_MAX_PAGES = 40;     // the overview reads at most this many pages

const store = {
  tenants: new Map(),   // name → {tenant, plan, ceiling, mode, suspended, total, by_class, seenAt}
  series: new Map(),    // name → [{t, c, ceil}]
  eventAt: new Map(),   // name → client time of the last event about it
  alerts: [],           // newest first, at most 50
  leader: null,         // {leader, address, term}
};

function tenantOf(j) {
  return {
    tenant: j.tenant, plan: j.plan, ceiling: j.ceiling, mode: j.mode, suspended: j.suspended,
    total: j.concurrency ? j.concurrency.total : 0, by_class: j.concurrency ? j.concurrency.by_class : {},
  };
}

function addPoint(name, t, c, ceil) {
  let s = store.series.get(name);
  if (!s) {
    if (store.series.size >= MAX_SERIES && name !== current.tenant) return;
    s = [];
    store.series.set(name, s);
  }
  const last = s[s.length - 1];
  if (last && t < last.t) t = last.t; // keep the series in time order
  if (last && last.t === t) { last.c = c; last.ceil = ceil; } else s.push({t, c, ceil});
  const cut = Date.now() - HOUR - 60000;
  let drop = 0;
  while (drop < s.length - 1 && s[drop].t < cut) drop++;
  if (s.length - drop > MAX_POINTS) drop = s.length - MAX_POINTS;
  if (drop > 0) s.splice(0, drop);
}

// addHistory puts a tenant's per-minute peaks from the server
// (GET /v1/tenants/{id}/history) before the points the page has of its own,
// marked h, so the hour chart is full as soon as it opens.
function addHistory(name, points) {
  let s = store.series.get(name);
  if (!s) { s = []; store.series.set(name, s); }
  const firstOwn = s.length ? s[0].t : Infinity;
  const older = points.map((p) => ({t: Date.parse(p.at), c: p.peak, ceil: p.ceiling, h: true}))
    .filter((p) => Number.isFinite(p.t) && p.t < firstOwn);
  const own = s.filter((p) => !p.h);
  s.length = 0;
  s.push(...older, ...own);
}

// noteTenant stores a tenant read by a poll that started at sentAt; an
// event received after the poll was sent is as new or newer, so it wins.
function noteTenant(j, sentAt) {
  const ev = store.eventAt.get(j.tenant);
  const prev = store.tenants.get(j.tenant);
  const t = tenantOf(j);
  if (ev !== undefined && ev > sentAt && prev) {
    Object.assign(prev, {plan: t.plan, ceiling: t.ceiling, mode: t.mode, suspended: t.suspended});
    return prev;
  }
  t.seenAt = Date.now();
  store.tenants.set(j.tenant, t);
  addPoint(j.tenant, t.seenAt, t.total, t.ceiling);
  return t;
}

function applyConcurrency(ev) {
  const at = Date.parse(ev.at);
  const now = Date.now();
  const t = Number.isFinite(at) ? Math.min(at, now) : now;
  for (const x of ev.tenants || []) {
    if (x.deleted) {
      store.tenants.delete(x.tenant);
      store.series.delete(x.tenant);
      continue;
    }
    const prev = store.tenants.get(x.tenant) || {tenant: x.tenant, mode: '', suspended: false};
    prev.plan = x.plan; prev.ceiling = x.ceiling; prev.total = x.concurrency; prev.by_class = x.by_class || {};
    prev.seenAt = now;
    store.tenants.set(x.tenant, prev);
    store.eventAt.set(x.tenant, now);
    addPoint(x.tenant, t, x.concurrency, x.ceiling);
  }
}

// ---------------------------------------------------------------------------
// The event stream, read with fetch so that requestHeaders() applies to it
// too. It reconnects with backoff; after a reconnect the page reloads its
// figures, since events may have been missed meanwhile.

const live = {
  state: 'connecting',
  connects: 0,
  set(state, why) {
    this.state = state;
    const el = document.getElementById('live-status');
    el.dataset.state = state;
    el.textContent = state === 'live' ? 'live' : state === 'down' ? 'offline — retrying' : 'connecting';
    el.title = why || 'live updates from /v1/events';
  },
};

async function runEvents() {
  let wait = 1000;
  for (;;) {
    try {
      const r = await request('/v1/events', {headers: {Accept: 'text/event-stream'}});
      if (r.status === 401) askToken('This server needs a token (headroom token create --role reader).');
      if (!r.ok || !r.body) throw new Error('HTTP ' + r.status);
      live.connects++;
      live.set('live');
      wait = 1000;
      // Read the figures again once the stream is open, so that no change
      // falls between what the page read and the first event.
      current.refresh();
      await readEvents(r.body, dispatch);
      live.set('down', 'the event stream ended');
    } catch (e) {
      live.set('down', 'event stream: ' + e.message);
    }
    await sleep(wait);
    wait = Math.min(wait * 2, 15000);
  }
}

// readEvents parses a text/event-stream body: "event:" and "data:" lines,
// ": comment" lines, a blank line ends an event.
async function readEvents(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '', name = '', data = [];
  for (;;) {
    const {value, done} = await reader.read();
    if (done) return;
    buf += value;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      let line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line.endsWith('\r')) line = line.slice(0, -1);
      if (line === '') {
        if (data.length) onEvent(name || 'message', data.join('\n'));
        name = ''; data = [];
        continue;
      }
      if (line[0] === ':') continue;
      const c = line.indexOf(':');
      const field = c < 0 ? line : line.slice(0, c);
      let v = c < 0 ? '' : line.slice(c + 1);
      if (v[0] === ' ') v = v.slice(1);
      if (field === 'event') name = v;
      else if (field === 'data') data.push(v);
    }
  }
}

function dispatch(name, raw) {
  let ev;
  try { ev = JSON.parse(raw); } catch (e) { return; }
  switch (name) {
    case 'concurrency': applyConcurrency(ev); break;
    case 'alert':
      store.alerts.unshift(ev);
      if (store.alerts.length > 50) store.alerts.length = 50;
      break;
    case 'leader': store.leader = ev; break;
  }
  document.getElementById('view').dataset.lastEvent = name;
  current.event(name, ev);
}

// ---------------------------------------------------------------------------
// DOM helpers.

function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'data') for (const [dk, dv] of Object.entries(v)) el.dataset[dk] = dv;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const kid of kids.flat()) {
    if (kid === undefined || kid === null || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

function fill(el, ...kids) { el.replaceChildren(); for (const k of kids.flat()) if (k) el.append(k); return el; }

function $(id) { return document.getElementById(id); }

// setFig shows a figure with its raw value in data-value.
function setFig(id, value, text) {
  const el = $(id);
  if (!el) return;
  el.dataset.value = String(value);
  el.textContent = text === undefined ? fmtInt(value) : text;
}

function fmtInt(n) { return Number(n || 0).toLocaleString('en-US'); }
function fmtNum(n, d) { return Number(n || 0).toLocaleString('en-US', {maximumFractionDigits: d === undefined ? 1 : d}); }
function fmtMoney(micros) {
  return (Number(micros || 0) / 1e6).toLocaleString('en-US', {minimumFractionDigits: 2, maximumFractionDigits: 2});
}
function fmtPct(x) { return fmtNum(x * 100, 0) + '%'; }
function fmtTime(s) {
  const d = new Date(s);
  return isNaN(d) ? String(s || '') : d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z').replace(/:\d\dZ$/, 'Z');
}
function ago(s) {
  const ms = Date.now() - Date.parse(s);
  if (!Number.isFinite(ms)) return '—';
  const sec = Math.max(0, Math.round(ms / 1000));
  if (sec < 90) return sec + ' s ago';
  if (sec < 5400) return Math.round(sec / 60) + ' min ago';
  if (sec < 172800) return Math.round(sec / 3600) + ' h ago';
  return Math.round(sec / 86400) + ' d ago';
}
function util(t) { return t.ceiling > 0 ? t.total / t.ceiling : 0; }
function utilBar(t) {
  if (!t.ceiling) return h('span', {class: 'muted', text: 'no ceiling'});
  const u = util(t);
  const bar = h('span', {class: 'util' + (u >= 1 ? ' bad' : u >= 0.8 ? ' warn' : '')}, h('span'));
  bar.firstChild.style.width = Math.min(100, u * 100).toFixed(1) + '%';
  return h('span', {data: {field: 'utilization', value: u.toFixed(4)}}, bar, fmtPct(u));
}
function tenantLink(name) { return h('a', {href: '#/tenant/' + encodeURIComponent(name), text: name}); }
function sleep(ms) { return new Promise((res) => setTimeout(res, ms)); }
function panel(title, id, ...body) { return h('section', {class: 'panel', id}, h('h2', {text: title}), ...body); }
function table(id, heads, rows, empty) {
  if (!rows.length) return h('div', {class: 'empty', id, data: {rows: '0'}, text: empty || 'none'});
  return h('div', {class: 'scroll'}, h('table', {id, data: {rows: String(rows.length)}},
    h('thead', null, h('tr', null, heads.map((x) => (x instanceof Node ? x : h('th', {class: /^#/.test(x) ? 'num' : '', text: x.replace(/^#/, '')}))))),
    h('tbody', null, rows)));
}
function td(v, cls) { return h('td', {class: cls}, v); }
function num(v, field, text) { return h('td', {class: 'num', data: field ? {field, value: String(v)} : undefined}, text === undefined ? fmtInt(v) : text); }
function errorBox(e) { return h('div', {class: 'error', text: e instanceof Error ? e.message : String(e)}); }

// ---------------------------------------------------------------------------
// Charts, as inline SVG.

const SVG = 'http://www.w3.org/2000/svg';
function s(tag, attrs, ...kids) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  for (const k of kids) el.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return el;
}
function niceMax(v) {
  if (v <= 0) return 10;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}
// scaleFor picks the top of a chart's y axis: the ceiling is drawn when it
// is within reach of the figures (up to four times the peak), else the
// chart follows the figures and says where the ceiling is.
function scaleFor(peak, ceiling) {
  if (ceiling > 0 && ceiling <= Math.max(peak, 1) * 4) return {ymax: niceMax(Math.max(peak, ceiling) * 1.1), off: false};
  return {ymax: niceMax(Math.max(peak, 1) * 1.25), off: ceiling > 0};
}

function offNote(svg, W, box, ceiling) {
  svg.append(s('text', {x: W - box.r, y: box.t + 10, 'text-anchor': 'end', class: 'off'}, `ceiling ${fmtInt(ceiling)} is above the chart`));
}

function axes(svg, box, ymax, W) {
  for (let i = 0; i <= 4; i++) {
    const y = box.b - (box.b - box.t) * i / 4;
    svg.append(s('line', {class: 'grid', x1: box.l, x2: W - box.r, y1: y, y2: y}));
    svg.append(s('text', {x: box.l - 6, y: y + 4, 'text-anchor': 'end'}, fmtInt(ymax * i / 4)));
  }
}

// hourChart draws concurrency (solid) and the ceiling (dashed) over the
// last hour as step lines.
// The charts are drawn at the width of their box, so that one unit is a
// pixel and the labels keep their size on a phone and on a laptop.
function chartSize(boxEl) {
  const W = Math.max(280, Math.round((boxEl && boxEl.clientWidth) || 720));
  return [W, W < 500 ? 180 : 230];
}

function hourChart(id, points, now, boxEl) {
  const [W, H] = chartSize(boxEl);
  const box = {l: 44, r: 10, t: 10, b: H - 22};
  const from = now - HOUR;
  const pts = points.filter((p) => p.t >= from - HOUR);
  let peak = 0, ceiling = 0;
  for (const p of pts) { peak = Math.max(peak, p.c); ceiling = Math.max(ceiling, p.ceil || 0); }
  const {ymax, off} = scaleFor(peak, ceiling);
  const x = (t) => box.l + (Math.max(t, from) - from) / HOUR * (W - box.l - box.r);
  const y = (v) => box.b - v / ymax * (box.b - box.t);
  const svg = s('svg', {id, class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'concurrency against ceiling, last hour', 'data-points': String(pts.length),
    'data-history-points': String(pts.filter((p) => p.h).length), 'data-first': pts.length ? String(pts[0].t) : ''});
  axes(svg, box, ymax, W);
  for (let m = 0; m <= 60; m += W < 500 ? 30 : 15) {
    const t = from + m * 60000;
    const d = new Date(t);
    svg.append(s('text', {x: x(t), y: H - 6, 'text-anchor': m === 0 ? 'start' : m === 60 ? 'end' : 'middle'},
      String(d.getHours()).padStart(2, '0') + ':' + String(d.getMinutes()).padStart(2, '0')));
  }
  const step = (key) => {
    let d = '';
    let prev = null;
    for (const p of pts) {
      const v = key(p);
      if (v === null || v === undefined) continue;
      if (prev === null) d += `M${x(p.t).toFixed(1)},${y(v).toFixed(1)}`;
      else d += `H${x(p.t).toFixed(1)}V${y(v).toFixed(1)}`;
      prev = v;
    }
    if (prev !== null) d += `H${x(now).toFixed(1)}`;
    return d;
  };
  const ceil = step((p) => (p.ceil > 0 ? Math.min(p.ceil, ymax) : null));
  if (ceil && !off) svg.append(s('path', {class: 'ceil', d: ceil}));
  if (off) offNote(svg, W, box, pts[pts.length - 1].ceil);
  const conc = step((p) => p.c);
  if (conc) svg.append(s('path', {class: 'conc', d: conc}));
  if (!pts.length) svg.append(s('text', {x: W / 2, y: H / 2, 'text-anchor': 'middle'}, 'collecting figures…'));
  return svg;
}

// dayChart draws each day's peak of the period as a bar, against the
// current ceiling.
function dayChart(id, days, ceiling, boxEl) {
  const [W, H] = chartSize(boxEl);
  const box = {l: 44, r: 10, t: 10, b: H - 22};
  let peak = 0;
  for (const d of days) peak = Math.max(peak, d.peak);
  const {ymax, off} = scaleFor(peak, ceiling || 0);
  const n = Math.max(days.length, 1);
  const bw = (W - box.l - box.r) / n;
  const y = (v) => box.b - v / ymax * (box.b - box.t);
  const svg = s('svg', {id, class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'daily peak this period', 'data-days': String(days.length)});
  axes(svg, box, ymax, W);
  days.forEach((d, i) => {
    const bx = box.l + i * bw;
    const r = s('rect', {class: 'bar' + (ceiling && d.peak > ceiling ? ' over' : ''), x: (bx + bw * 0.15).toFixed(1), y: y(d.peak).toFixed(1),
      width: Math.max(1, bw * 0.7).toFixed(1), height: Math.max(0, box.b - y(d.peak)).toFixed(1), 'data-date': d.date, 'data-peak': String(d.peak)});
    r.append(s('title', null, `${d.date}: peak ${fmtInt(d.peak)}, refused ${fmtInt(d.refused)}`));
    svg.append(r);
    const every = W < 500 ? 10 : 5;
    if (i === 0 || ((i + 1) % every === 0 && days.length - 1 - i >= every / 2) || i === days.length - 1) {
      svg.append(s('text', {x: bx + bw / 2, y: H - 6, 'text-anchor': 'middle'}, String(Number(d.date.slice(8)))));
    }
  });
  if (ceiling && !off) svg.append(s('line', {class: 'ceil', x1: box.l, x2: W - box.r, y1: y(ceiling), y2: y(ceiling)}));
  if (off) offNote(svg, W, box, ceiling);
  return svg;
}

// ---------------------------------------------------------------------------
// Pages. Each is an object with render() (called once), refresh() (reload
// its figures), event(name, data) and stop(); the router swaps them.

const CLASSES = ['audio', 'video-hd', 'video-fhd', 'video-2k', 'video-2k+', 'ai', 'device'];

let current = {tenant: null, refresh() {}, event() {}, stop() {}};

// every runs fn every ms while the page is current.
function every(page, ms, fn) {
  const id = setInterval(() => { if (current === page) fn(); }, ms);
  page.timers.push(id);
}

// sequence numbers the reads of one kind: the function it returns, called
// before a read, returns fresh(), true when the answer may be shown (no
// answer to a later read has been shown already).
function sequence() {
  let issued = 0, shown = 0;
  return () => {
    const mine = ++issued;
    return () => { if (mine < shown) return false; shown = mine; return true; };
  };
}

// base gives a page its bookkeeping: timers, and seq for its reads.
function base(name) {
  return {name, timers: [], seq: sequence(), tenant: null,
    stop() { for (const id of this.timers) clearInterval(id); this.timers = []; this.stopped = true; },
    refresh() {}, event() {}};
}

// readAllTenants reads the tenant list page by page; truncated says it
// stopped at LIST_MAX_PAGES, count is how many tenants there are in all
// (X-Total-Count).
async function readAllTenants() {
  const sentAt = Date.now();
  const out = [];
  let cursor = '', count = 0;
  for (let i = 0; i < LIST_MAX_PAGES; i++) {
    const q = new URLSearchParams({limit: String(LIST_PAGE), sort: 'tenant'});
    if (cursor) q.set('cursor', cursor);
    const {data, headers} = await getJSON('/v1/tenants?' + q);
    for (const j of data) out.push(noteTenant(j, sentAt));
    count = Number(headers.get('X-Total-Count')) || out.length;
    cursor = headers.get('X-Next-Cursor') || '';
    if (!cursor) return {tenants: out, truncated: false, count: out.length};
  }
  return {tenants: out, truncated: true, count};
}

// inBatches runs fn over items, a few at a time.
async function inBatches(items, n, fn) {
  const out = [];
  for (let i = 0; i < items.length; i += n) out.push(...await Promise.all(items.slice(i, i + n).map(fn)));
  return out;
}

function refusedOf(usage) {
  let n = 0;
  for (const v of Object.values((usage && usage.refused_by_class) || {})) n += v;
  return n;
}

function overviewPage() {
  const p = base('overview');
  // list: every tenant read; with more than LIST_MAX_PAGES pages of them
  // (truncated), the busiest and those near their ceiling come from the
  // server's sorted and filtered lists instead (busy, nearby).
  let list = [], truncated = false, count = 0, busy = [], nearby = [], nearMore = false, refused = new Map(), maus = new Map(), loaded = false, lastFull = 0;
  p.render = (view) => {
    fill(view,
      h('h1', {text: 'Fleet overview'}),
      h('div', {class: 'cards'},
        h('div', {class: 'card'}, h('div', {class: 'label', text: 'Open sessions, all tenants'}), h('div', {class: 'big', id: 'ov-total', text: '…'})),
        h('div', {class: 'card'}, h('div', {class: 'label', text: 'Tenants'}), h('div', {class: 'big', id: 'ov-tenants', text: '…'})),
        h('div', {class: 'card'}, h('div', {class: 'label', text: 'Near or over ceiling (≥ 80%)'}), h('div', {class: 'big', id: 'ov-near', text: '…'})),
        h('div', {class: 'card'}, h('div', {class: 'label', text: 'Refused admissions this period'}), h('div', {class: 'big', id: 'ov-refused', text: '…'})),
        h('div', {class: 'card'}, h('div', {class: 'label', text: 'Leader'}), h('div', {class: 'big name', id: 'ov-leader', text: '…'}))),
      h('div', {class: 'grid2'},
        panel('Busiest tenants', 'ov-busiest-panel', h('div', {id: 'ov-busiest-box'})),
        panel('Near or over their ceiling', 'ov-near-panel', h('div', {id: 'ov-near-box'}))),
      h('div', {class: 'grid2'},
        panel('Refused admissions this period', 'ov-refused-panel', h('div', {id: 'ov-refused-box'})),
        panel('Alerts', 'ov-alerts-panel', h('ul', {class: 'plain events', id: 'ov-alerts'}))),
      h('p', {class: 'muted', id: 'ov-note'}));
    p.refresh();
    every(p, 15000, () => p.refresh(false));
  };
  // refresh reads every tenant again: each time while they fit in one
  // page, else every two minutes (events keep the figures of those read
  // right in between), or when asked (full).
  p.refresh = async (full) => {
    const fresh = p.seq();
    try {
      const again = full !== false || list.length <= LIST_PAGE || Date.now() - lastFull > 120000;
      const [all, st] = await Promise.all([again ? readAllTenants() : null, getJSON('/v1/status')]);
      if (current !== p || !fresh()) return;
      if (all) {
        list = all.tenants.map((t) => t.tenant);
        truncated = all.truncated;
        count = all.count;
        lastFull = Date.now();
      }
      if (truncated) {
        const sentAt = Date.now();
        const [b, n] = await Promise.all([getJSON('/v1/tenants?sort=concurrency&limit=10'), getJSON('/v1/tenants?sort=utilization&min_utilization=0.8&limit=50')]);
        if (current !== p || !fresh()) return;
        busy = b.data.map((j) => noteTenant(j, sentAt).tenant);
        nearby = n.data.map((j) => noteTenant(j, sentAt).tenant);
        nearMore = !!n.headers.get('X-Next-Cursor');
      }
      setFig('ov-leader', st.data.leader_id || '', st.data.leader_id || 'none');
      draw();
      // Refused admissions are per tenant usage: read every tenant's when
      // there are few, else those shown above.
      const names = list.length <= 50 ? list : [...new Set([...busiest(10), ...near(50)].map((t) => t.tenant))];
      const got = await inBatches(names, 6, async (n) => {
        try {
          const u = (await getJSON('/v1/tenants/' + encodeURIComponent(n))).data.usage;
          return [n, refusedOf(u), (u && u.mau) || 0];
        } catch (e) { return [n, 0, 0]; }
      });
      if (current !== p || !fresh()) return;
      refused = new Map(got.map(([n, r]) => [n, r]));
      maus = new Map(got.map(([n, , m]) => [n, m]));
      p.refusedScope = list.length <= 50 ? 'all' : 'shown';
      loaded = true;
      draw();
    } catch (e) {
      if (current === p) fill($('ov-busiest-box'), errorBox(e));
    }
  };
  const of = (names) => names.map((n) => store.tenants.get(n)).filter(Boolean);
  const tenants = () => of(list);
  const busiest = (n) => of(truncated ? busy : list).sort((a, b) => b.total - a.total || (a.tenant < b.tenant ? -1 : 1)).slice(0, n);
  const near = (n) => of(truncated ? nearby : list).filter((t) => t.ceiling > 0 && util(t) >= 0.8).sort((a, b) => util(b) - util(a)).slice(0, n);
  function draw() {
    const ts = tenants();
    let total = 0;
    for (const t of ts) total += t.total;
    setFig('ov-total', total, (truncated ? '≥ ' : '') + fmtInt(total));
    setFig('ov-tenants', truncated ? count : ts.length);
    const nr = near(Infinity);
    setFig('ov-near', nr.length, (truncated && nearMore ? '≥ ' : '') + fmtInt(nr.length));
    const row = (t) => h('tr', {data: {tenant: t.tenant}}, td(tenantLink(t.tenant)), td(t.plan), num(t.total, 'concurrency'),
      num(t.ceiling, 'ceiling', t.ceiling ? fmtInt(t.ceiling) : '—'), td(utilBar(t)),
      num(maus.get(t.tenant) || 0, 'mau', maus.has(t.tenant) ? fmtInt(maus.get(t.tenant)) : '…'));
    fill($('ov-busiest-box'), table('ov-busiest', ['tenant', 'plan', '#open', '#ceiling', 'utilization', '#MAU'], busiest(10).map(row), 'no tenants yet'));
    fill($('ov-near-box'), table('ov-near-list', ['tenant', 'plan', '#open', '#ceiling', 'utilization', '#MAU'], near(50).map(row), 'no tenant at 80% of its ceiling or more'));
    if (loaded) {
      let sum = 0;
      const rows = [];
      for (const [n, v] of [...refused].sort((a, b) => b[1] - a[1])) {
        sum += v;
        if (v > 0) rows.push(h('tr', {data: {tenant: n}}, td(tenantLink(n)), num(v, 'refused')));
      }
      setFig('ov-refused', sum, (p.refusedScope === 'shown' ? '≥ ' : '') + fmtInt(sum));
      fill($('ov-refused-box'), table('ov-refused-list', ['tenant', '#refused'], rows, 'no session refused this period'));
      $('ov-note').textContent = p.refusedScope === 'shown' ? 'Refused admissions are summed over the tenants listed above.' : '';
    }
    drawAlerts($('ov-alerts'), null);
    $('view').dataset.ready = 'true';
  }
  p.event = (name, ev) => {
    if (name === 'concurrency') {
      let fresh = false;
      for (const x of ev.tenants || []) {
        if (x.deleted) { list = list.filter((n) => n !== x.tenant); busy = busy.filter((n) => n !== x.tenant); nearby = nearby.filter((n) => n !== x.tenant); }
        else if (!truncated && !list.includes(x.tenant)) { list.push(x.tenant); fresh = true; }
      }
      if (fresh) list.sort();
      draw();
    } else if (name === 'alert') drawAlerts($('ov-alerts'), null);
    else if (name === 'leader') setFig('ov-leader', ev.leader || '', ev.leader || 'none');
    else if (name === 'plan') p.refresh(false);
  };
  return p;
}

function drawAlerts(ul, tenant) {
  if (!ul) return;
  const items = store.alerts.filter((a) => !tenant || a.tenant === tenant).slice(0, 20)
    .map((a) => h('li', {data: {alert: a.id || '', tenant: a.tenant || ''}}, h('span', {class: 'pill ' + (a.threshold_pct >= 100 ? 'bad' : 'warn'), text: a.threshold_pct + '%'}), ' ',
      a.message || `${a.tenant} ${a.kind}`, ' ', h('span', {class: 'muted', text: fmtTime(a.at)})));
  fill(ul, items.length ? items : [h('li', {class: 'muted', text: 'no alert since this page opened'})]);
}

// The tenant list: paged by the server (X-Next-Cursor), sorted, filtered.
function tenantListPage(params) {
  const p = base('tenants');
  const opt = {
    sort: params.get('sort') || 'utilization', q: params.get('q') || '', plan: params.get('plan') || '',
    min: params.get('min') || '', limit: params.get('limit') || '50',
  };
  let cursors = [''];  // cursors[i] reads page i
  let page = 0, next = '', rows = [], total = null;
  const setHash = () => {
    const q = new URLSearchParams();
    for (const k of ['sort', 'q', 'plan', 'min']) if (opt[k]) q.set(k, opt[k]);
    if (opt.limit !== '50') q.set('limit', opt.limit);
    history.replaceState(null, '', '#/tenants' + (q.toString() ? '?' + q : ''));
  };
  const restart = () => { cursors = ['']; page = 0; setHash(); p.refresh(); };
  let debounce = 0;
  p.render = async (view) => {
    const sortSel = h('select', {id: 'tl-sort', 'aria-label': 'sort by', onchange: (e) => { opt.sort = e.target.value; restart(); }},
      [['utilization', 'utilization'], ['concurrency', 'open sessions'], ['tenant', 'name']].map(([v, l]) => h('option', {value: v, selected: opt.sort === v, text: 'sort: ' + l})));
    const planSel = h('select', {id: 'tl-plan', 'aria-label': 'plan', onchange: (e) => { opt.plan = e.target.value; restart(); }},
      h('option', {value: '', text: 'all plans'}));
    const minSel = h('select', {id: 'tl-min', 'aria-label': 'minimum utilization', onchange: (e) => { opt.min = e.target.value; restart(); }},
      [['', 'any utilization'], ['0.5', '≥ 50%'], ['0.8', '≥ 80%'], ['1', '≥ 100%']].map(([v, l]) => h('option', {value: v, selected: opt.min === v, text: l})));
    const search = h('input', {id: 'tl-search', type: 'search', placeholder: 'search tenants', value: opt.q, 'aria-label': 'search tenants',
      oninput: (e) => { clearTimeout(debounce); debounce = setTimeout(() => { opt.q = e.target.value.trim(); restart(); }, 250); }});
    fill(view,
      h('h1', {text: 'Tenants'}),
      h('div', {class: 'toolbar'}, search, sortSel, planSel, minSel),
      h('div', {id: 'tl-box'}),
      h('div', {class: 'pager'},
        h('button', {id: 'tl-prev', type: 'button', disabled: true, onclick: () => { if (page > 0) { page--; p.refresh(); } }, text: '← previous'}),
        h('span', {id: 'tl-page', class: 'muted'}),
        h('button', {id: 'tl-next', type: 'button', disabled: true, onclick: () => { if (next) { cursors[page + 1] = next; page++; p.refresh(); } }, text: 'next →'})));
    p.refresh();
    every(p, 10000, () => p.refresh());
    try {
      const {data} = await getJSON('/v1/plans');
      for (const pl of data || []) planSel.append(h('option', {value: pl.name, selected: opt.plan === pl.name, text: 'plan: ' + pl.name}));
    } catch (e) { /* the list works without the plan filter's choices */ }
  };
  p.refresh = async () => {
    const fresh = p.seq();
    const q = new URLSearchParams({limit: opt.limit, sort: opt.sort});
    if (cursors[page]) q.set('cursor', cursors[page]);
    if (opt.q) q.set('q', opt.q);
    if (opt.plan) q.set('plan', opt.plan);
    if (opt.min) q.set('min_utilization', opt.min);
    const sentAt = Date.now();
    try {
      const {data, headers} = await getJSON('/v1/tenants?' + q);
      if (current !== p || !fresh()) return;
      rows = data.map((j) => noteTenant(j, sentAt).tenant);
      next = headers.get('X-Next-Cursor') || '';
      total = headers.get('X-Total-Count');
      draw();
    } catch (e) {
      if (current === p) fill($('tl-box'), errorBox(e));
    }
  };
  function draw() {
    const trs = rows.map((n) => store.tenants.get(n)).filter(Boolean).map((t) => h('tr', {data: {tenant: t.tenant}},
      td(tenantLink(t.tenant)), td(t.plan), td(t.mode, 'hide-narrow'), num(t.total, 'concurrency'), num(t.ceiling, 'ceiling', t.ceiling ? fmtInt(t.ceiling) : '—'),
      td(utilBar(t)), td(t.suspended ? h('span', {class: 'pill bad', text: 'suspended'}) : '', 'hide-narrow')));
    fill($('tl-box'), table('tl-table', ['tenant', 'plan', h('th', {class: 'hide-narrow', text: 'mode'}), '#open', '#ceiling', 'utilization', h('th', {class: 'hide-narrow'})], trs, 'no tenant matches'));
    $('tl-prev').disabled = page === 0;
    $('tl-next').disabled = !next;
    const pg = $('tl-page');
    pg.dataset.page = String(page + 1);
    pg.textContent = 'page ' + (page + 1) + (total !== null ? ` of ${fmtInt(Math.max(1, Math.ceil(Number(total) / Number(opt.limit))))} · ${fmtInt(total)} tenants` : '');
    if (total !== null) pg.dataset.total = total;
    $('view').dataset.ready = 'true';
  }
  p.event = (name, ev) => {
    if (name === 'concurrency' && (ev.tenants || []).some((x) => x.deleted && rows.includes(x.tenant))) p.refresh();
    else if (name === 'concurrency' && (ev.tenants || []).some((x) => rows.includes(x.tenant))) draw();
    else if (name === 'plan') p.refresh();
  };
  return p;
}

// The tenant page.
function tenantPage(name) {
  const p = base('tenant');
  p.tenant = name;
  const enc = encodeURIComponent(name);
  p.render = (view) => {
    fill(view,
      h('h1', {id: 'tp-name', data: {tenant: name}}, name, ' ', h('span', {id: 'tenant-suspended', class: 'pill bad', hidden: true, text: 'suspended'})),
      h('div', {class: 'cards'},
        h('div', {class: 'card'}, h('div', {class: 'label', text: 'Open sessions'}), h('div', {class: 'big', id: 'tenant-concurrency', text: '…'})),
        h('div', {class: 'card'}, h('div', {class: 'label', text: 'Ceiling'}), h('div', {class: 'big', id: 'tenant-ceiling', text: '…'}),
          h('div', {class: 'label bad', id: 'tenant-over', hidden: true})),
        h('div', {class: 'card'}, h('div', {class: 'label', text: 'Plan'}), h('div', {class: 'big name', id: 'tenant-plan', text: '…'}), h('div', {class: 'label', id: 'tenant-mode'})),
        h('div', {class: 'card'}, h('div', {class: 'label', text: 'Cost so far'}), h('div', {class: 'big', id: 'tenant-cost', text: '…'}), h('div', {class: 'label', id: 'tenant-period'})),
        h('div', {class: 'card'}, h('div', {class: 'label', text: 'Peak this period (PCU)'}), h('div', {class: 'big', id: 'tenant-pcu', text: '…'}))),
      h('div', {id: 'tp-error'}),
      panel('From active users to users at once', 'tp-funnel', h('div', {class: 'cards funnel'},
        h('div', {class: 'card'}, h('div', {class: 'label', text: 'Monthly active users (MAU)'}), h('div', {class: 'big', id: 'tenant-mau', text: '…'}), h('div', {class: 'label', id: 'tenant-mau-limit'})),
        h('div', {class: 'card'}, h('div', {class: 'label', text: 'Peak daily active users'}), h('div', {class: 'big', id: 'tenant-peak-dau', text: '…'}), h('div', {class: 'label', id: 'tenant-dau'})),
        h('div', {class: 'card'}, h('div', {class: 'label', text: 'Peak at once (PCU)'}), h('div', {class: 'big', id: 'tenant-funnel-pcu', text: '…'}), h('div', {class: 'label', id: 'tenant-pcu-limit'})))),
      panel('Concurrency against ceiling, last hour', 'tp-hour', h('div', {id: 'tp-chart-hour-box'}),
        h('div', {class: 'legend'}, h('span', null, h('span', {class: 'sw'}), 'open sessions'), h('span', null, h('span', {class: 'sw ceil'}), 'ceiling'),
          h('span', {class: 'muted', text: 'per-minute peaks from the server, then live'}))),
      panel('This period by day', 'tp-days', h('div', {id: 'tp-chart-days-box'}),
        h('div', {class: 'legend'}, h('span', null, h('span', {class: 'sw bar'}), 'daily peak'), h('span', null, h('span', {class: 'sw ceil'}), 'current ceiling'))),
      h('div', {class: 'grid2'},
        panel('Usage by class', 'tp-usage', h('div', {id: 'tp-usage-box'})),
        panel('Cost so far', 'tp-cost', h('div', {id: 'tp-cost-box'}))),
      h('div', {class: 'grid2'},
        panel('Advice', 'tp-advice', h('div', {id: 'tp-advice-box'})),
        panel('Scheduled changes', 'tp-schedule', h('div', {id: 'tp-schedule-box'}))),
      h('div', {class: 'grid2'},
        panel('Plan history', 'tp-history', h('div', {id: 'tp-history-box'})),
        panel('Alerts', 'tp-alerts', h('ul', {class: 'plain events', id: 'tp-alerts-list'}))));
    drawAlerts($('tp-alerts-list'), name);
    p.loadHistory();
    p.refresh();
    every(p, 1000, drawLive);
    every(p, 10000, () => p.refreshTenant());
    every(p, 60000, () => p.refresh());
  };
  // loadHistory fills the hour chart with the server's last hour.
  p.loadHistory = async () => {
    try {
      const {data} = await getJSON('/v1/tenants/' + enc + '/history?since=1h');
      if (current !== p) return;
      addHistory(name, data.points || []);
      drawLive();
    } catch (e) {
      // an older server has no history: the chart fills as the page runs
    }
  };
  // refreshTenant reloads the tenant itself (plan, ceiling, concurrency)
  // and what a plan change alters: the schedule and the history.
  const seqUsage = sequence();
  p.refreshTenant = async (withHistory) => {
    const fresh = p.seq();
    const sentAt = Date.now();
    try {
      const reads = [getJSON('/v1/tenants/' + enc)];
      if (withHistory) reads.push(getJSON('/v1/tenants/' + enc + '/schedule'), getJSON('/v1/audit?tenant=' + enc + '&limit=100'));
      const [t, sched, audit] = await Promise.all(reads);
      if (current !== p || !fresh()) return;
      fill($('tp-error'));
      const tj = t.data;
      noteTenant(tj, sentAt);
      showTenant(tj);
      if (sched) drawSchedule(sched.data);
      if (audit) drawHistory(audit.data);
      $('view').dataset.ready = 'true';
    } catch (e) {
      if (current === p) fill($('tp-error'), h('div', {class: 'panel error', id: 'tp-missing', text: e.message}));
    }
  };
  p.refresh = async () => {
    await p.refreshTenant(true);
    const t = store.tenants.get(name);
    if (!t || current !== p) return;
    const fresh = seqUsage();
    try {
      const [u, adv] = await Promise.all([getJSON('/v1/tenants/' + enc + '/usage'),
        t.plan ? getJSON('/v1/tenants/' + enc + '/advice') : Promise.resolve(null)]);
      if (current !== p || !fresh()) return;
      drawUsage(u.data, t);
      drawAdvice(adv && adv.data);
    } catch (e) {
      if (current === p) fill($('tp-usage-box'), errorBox(e));
    }
  };
  function showTenant(tj) {
    const t = store.tenants.get(name) || tenantOf(tj);
    setFig('tenant-plan', tj.plan || '', tj.plan || 'none');
    $('tenant-mode').textContent = tj.mode ? tj.mode + ' enforcement' : '';
    $('tenant-suspended').hidden = !tj.suspended;
    const g = (tj.grants || []).find((x) => x.pool === 'total');
    $('tenant-ceiling').title = g ? `${fmtInt(g.leased)} leased to agents, ${fmtInt(g.booked)} booked, ${fmtInt(g.free)} free` : '';
    // A strict pool whose bookings stand over its ceiling admits nothing
    // until closes bring it back under.
    const over = (tj.grants || []).filter((x) => x.over > 0);
    $('tenant-over').hidden = over.length === 0;
    $('tenant-over').textContent = over.map((x) => `${x.pool === 'total' ? '' : x.pool + ' '}over by ${fmtInt(x.over)} (${x.over_cause}): admitting nothing until closes bring it under`).join('; ');
    if (tj.usage) setFig('tenant-pcu', tj.usage.pcu);
    drawFunnel(tj);
    drawLive(t);
  }
  // drawFunnel shows MAU → peak DAU → PCU, each against the plan's limit.
  async function drawFunnel(tj) {
    const u = tj.usage || {};
    setFig('tenant-mau', u.mau || 0);
    setFig('tenant-peak-dau', u.peak_dau || 0);
    $('tenant-dau').textContent = `today ${fmtInt(u.dau || 0)}`;
    setFig('tenant-funnel-pcu', u.pcu || 0);
    $('tenant-pcu-limit').textContent = tj.ceiling ? `ceiling ${fmtInt(tj.ceiling)}` + (u.peak_dau ? `; ${(u.pcu / u.peak_dau).toFixed(3)} per daily active user` : '') : 'no ceiling';
    let included = '';
    if (tj.plan) {
      try {
        const pl = (await getJSON('/v1/plans/' + encodeURIComponent(tj.plan))).data;
        if (pl.included_mau) included = `of ${fmtInt(pl.included_mau)} included`;
      } catch (e) {
        // a tenant token cannot read the catalogue: the limit is not shown
      }
    }
    $('tenant-mau-limit').textContent = included;
  }
  function drawLive() {
    const t = store.tenants.get(name);
    if (!t) return;
    setFig('tenant-concurrency', t.total);
    $('tenant-concurrency').dataset.at = String(t.seenAt || '');
    setFig('tenant-ceiling', t.ceiling, t.ceiling ? fmtInt(t.ceiling) : 'none');
    const box = $('tp-chart-hour-box');
    fill(box, hourChart('tp-chart-hour', store.series.get(name) || [], Date.now(), box));
  }
  function drawUsage(u, t) {
    setFig('tenant-period', u.period, 'period ' + u.period + (u.closed ? ' (closed)' : ''));
    const box = $('tp-chart-days-box');
    fill(box, dayChart('tp-chart-days', u.days || [], t.ceiling, box));
    const rows = CLASSES.map((c) => h('tr', {data: {class: c}}, td(c),
      num(t.by_class ? t.by_class[c] || 0 : 0, 'open'),
      num(((u.seconds_by_class || {})[c] || 0) / 60, 'minutes', fmtNum(((u.seconds_by_class || {})[c] || 0) / 60)),
      num((u.pcu_by_class || {})[c] || 0, 'pcu'), num((u.refused_by_class || {})[c] || 0, 'refused')));
    fill($('tp-usage-box'), table('tp-usage-table', ['class', '#open', '#minutes', '#peak', '#refused'], rows),
      h('dl', {class: 'kv'},
        h('dt', {text: 'unit-minutes'}), h('dd', {id: 'tp-unit-minutes', data: {value: String(u.unit_minutes)}, text: fmtNum(u.unit_minutes)}),
        h('dt', {text: 'PCU (' + (u.peak_basis || 'global') + ')'}), h('dd', {text: fmtInt(u.plan_pcu)}),
        h('dt', {text: 'time at or over the ceiling'}), h('dd', {text: fmtNum(u.seconds_over_ceiling / 60) + ' min'}),
        h('dt', {text: 'period closes'}), h('dd', {text: fmtTime(u.closes_at)})));
    if (u.invoice) {
      setFig('tenant-cost', u.invoice.total_micros, fmtMoney(u.invoice.total_micros));
      const lines = (u.invoice.lines || []).map((l, i) => h('tr', {data: {line: String(i), kind: l.kind}},
        td(l.kind), td(l.plan + (l.class ? ' · ' + l.class : '')), td(l.detail || fmtInt(l.quantity) + ' ' + l.unit, 'hide-narrow wrap'),
        num(l.amount_micros, 'amount', fmtMoney(l.amount_micros))));
      lines.push(h('tr', null, h('th', {text: 'total'}), td(''), td('', 'hide-narrow'), h('th', {class: 'num', id: 'tp-cost-total', data: {value: String(u.invoice.total_micros)}, text: fmtMoney(u.invoice.total_micros)})));
      fill($('tp-cost-box'), table('tp-invoice', ['line', 'plan', h('th', {class: 'hide-narrow', text: 'detail'}), '#amount'], lines));
    } else {
      setFig('tenant-cost', '', '—');
      fill($('tp-cost-box'), h('div', {class: 'empty', id: 'tp-invoice', text: u.invoice_error || 'no invoice'}));
    }
  }
  function drawAdvice(a) {
    if (!a) { fill($('tp-advice-box'), h('div', {class: 'empty', id: 'tp-advice-move', text: 'on no plan'})); return; }
    const opts = (a.options || []).map((o) => h('tr', {data: {plan: o.plan}, class: o.plan === a.recommended ? 'rec' : ''},
      td(o.plan + (o.current ? ' (current)' : '') + (o.plan === a.recommended ? ' ★' : '')), num(o.ceiling, null, o.ceiling ? fmtInt(o.ceiling) : '—'),
      td(o.fits ? h('span', {class: 'pill ok', text: 'fits'}) : h('span', {class: 'pill bad', text: 'too small'})),
      num(o.projected_micros, 'projected', fmtMoney(o.projected_micros))));
    fill($('tp-advice-box'),
      h('p', null, h('strong', {id: 'tp-advice-move', data: {value: a.move, recommended: a.recommended}},
        !a.move || a.move === 'stay' ? 'Stay on ' + a.current : `${a.move[0].toUpperCase() + a.move.slice(1)} to ${a.recommended}` + (a.effective ? ` (${a.effective})` : ''))),
      h('ul', {class: 'plain', id: 'tp-advice-reasons'}, (a.reasons || []).map((r) => h('li', {text: r}))),
      table('tp-advice-options', ['plan', '#ceiling', 'fits', '#projected cost'], opts));
  }
  function drawSchedule(list) {
    const rows = (list || []).map((sc) => h('tr', {data: {id: String(sc.id), plan: sc.plan}}, td(sc.plan), td(fmtTime(sc.at)), td(sc.operator || '', 'hide-narrow'), td(fmtTime(sc.created), 'hide-narrow')));
    fill($('tp-schedule-box'), table('tp-schedule-table', ['to plan', 'at', h('th', {class: 'hide-narrow', text: 'by'}), h('th', {class: 'hide-narrow', text: 'asked'})], rows, 'no change scheduled'));
  }
  function drawHistory(list) {
    const rows = (list || []).map((e) => h('tr', {data: {index: String(e.index), kind: e.kind, after: e.after || ''}},
      td(fmtTime(e.time)), td(e.kind), td((e.before || '—') + ' → ' + (e.after || '—')), td(e.operator || '', 'hide-narrow')));
    fill($('tp-history-box'), table('tp-history-table', ['time', 'change', 'plan', h('th', {class: 'hide-narrow', text: 'by'})], rows, 'no change recorded'));
  }
  p.event = (ename, ev) => {
    if (ename === 'concurrency') {
      const x = (ev.tenants || []).find((y) => y.tenant === name);
      if (!x) return;
      if (x.deleted) { p.refreshTenant(true); return; } // shows that it is gone
      drawLive();
      const shown = $('tenant-plan').dataset.value;
      if (shown !== undefined && shown !== x.plan) p.refreshTenant(true); // a change whose plan event was missed
    } else if (ename === 'plan') {
      if (!ev.tenant || ev.tenant === name) p.refresh(); // the ceiling, the schedule, the history, the invoice may change
    } else if (ename === 'alert') {
      if (ev.tenant === name) drawAlerts($('tp-alerts-list'), name);
    }
  };
  return p;
}

// The cluster page: servers, leader, agents.
function clusterPage() {
  const p = base('cluster');
  p.render = (view) => {
    fill(view,
      h('h1', {text: 'Cluster'}),
      h('div', {class: 'cards'},
        h('div', {class: 'card'}, h('div', {class: 'label', text: 'Leader'}), h('div', {class: 'big name', id: 'cl-leader', text: '…'})),
        h('div', {class: 'card'}, h('div', {class: 'label', text: 'Term'}), h('div', {class: 'big', id: 'cl-term', text: '…'})),
        h('div', {class: 'card'}, h('div', {class: 'label', text: 'This server'}), h('div', {class: 'big name', id: 'cl-self', text: '…'}), h('div', {class: 'label', id: 'cl-self-state'})),
        h('div', {class: 'card'}, h('div', {class: 'label', text: 'Applied / committed'}), h('div', {class: 'big', id: 'cl-index', text: '…'})),
        h('div', {class: 'card'}, h('div', {class: 'label', text: 'Agents connected here'}), h('div', {class: 'big', id: 'cl-agents-connected', text: '…'}))),
      panel('Servers', 'cl-servers-panel', h('div', {id: 'cl-servers-box'})),
      panel('Agents', 'cl-agents-panel', h('div', {id: 'cl-agents-box'}),
        h('p', {class: 'muted', text: 'Last contact is the last batch the cluster applied from the agent.'})));
    p.refresh();
    every(p, 5000, () => p.refresh());
  };
  p.refresh = async () => {
    const fresh = p.seq();
    try {
      const [st, members, peers, agents] = await Promise.all(['/v1/status', '/v1/members', '/v1/raft/peers', '/v1/agents'].map((u) => getJSON(u)));
      if (current !== p || !fresh()) return;
      const s0 = st.data;
      setFig('cl-leader', s0.leader_id || '', s0.leader_id || 'none');
      setFig('cl-term', s0.term);
      setFig('cl-self', s0.id, s0.id);
      $('cl-self-state').textContent = s0.state + ' · ' + s0.http_addr;
      setFig('cl-index', s0.applied_index, fmtInt(s0.applied_index) + ' / ' + fmtInt(s0.commit_index));
      setFig('cl-agents-connected', s0.agents_connected);
      const voters = new Map(peers.data.map((x) => [x.id, x]));
      const seen = new Set();
      const rows = members.data.map((m) => {
        seen.add(m.id);
        const v = voters.get(m.id);
        const role = m.leader || (v && v.leader) ? 'leader' : v ? (v.voter ? 'follower' : 'non-voter') : m.raft_role;
        const health = m.status === 'alive' ? 'ok' : m.status === 'suspect' ? 'warn' : 'bad';
        return h('tr', {data: {server: m.id, role, status: m.status}}, td(m.id), td(h('span', {class: 'pill ' + (role === 'leader' ? 'ok' : ''), text: role})),
          td(h('span', {class: 'pill ' + health, text: m.status})), td(m.http_addr || '—'), td(m.raft_addr || '—', 'hide-narrow'), td(ago(m.status_since), 'hide-narrow'));
      });
      for (const v of peers.data) {
        if (seen.has(v.id)) continue;
        rows.push(h('tr', {data: {server: v.id, role: v.leader ? 'leader' : 'follower', status: 'unknown'}}, td(v.id),
          td(h('span', {class: 'pill', text: v.leader ? 'leader' : v.voter ? 'follower' : 'non-voter'})), td(h('span', {class: 'pill warn', text: 'not in gossip'})),
          td('—'), td(v.address, 'hide-narrow'), td('', 'hide-narrow')));
      }
      fill($('cl-servers-box'), table('cl-servers', ['server', 'role', 'health', 'HTTP', h('th', {class: 'hide-narrow', text: 'Raft'}), h('th', {class: 'hide-narrow', text: 'status since'})], rows));
      const arows = agents.data.map((a) => h('tr', {data: {agent: a.id, expired: String(a.expired)}},
        td(a.id), td(a.region || '—', 'hide-narrow'),
        td(h('span', {data: {field: 'last-seen', value: a.last_seen}, title: fmtTime(a.last_seen), text: ago(a.last_seen)})),
        td(h('span', {class: 'pill ' + (a.expired ? 'bad' : 'ok'), text: a.expired ? 'expired' : 'live'})),
        num(a.sessions, 'sessions'), num(a.tenants, 'tenants', undefined),
        num(a.unacked_batches === undefined ? '' : a.unacked_batches, 'unacked', a.unacked_batches === undefined ? '—' : fmtInt(a.unacked_batches)),
        num(a.last_seq, 'last-seq')));
      fill($('cl-agents-box'), table('cl-agents', ['agent', h('th', {class: 'hide-narrow', text: 'region'}), 'last contact', 'state', '#sessions', '#tenants',
        h('th', {class: 'num', title: 'batches the agent has sent and the cluster not yet acknowledged', text: 'unacked'}), '#last batch'], arows, 'no agent has reported yet'));
      $('view').dataset.ready = 'true';
    } catch (e) {
      if (current === p) fill($('cl-servers-box'), errorBox(e));
    }
  };
  p.event = (name) => { if (name === 'leader') p.refresh(); };
  return p;
}

// ---------------------------------------------------------------------------
// Router: #/ overview, #/tenants[?…], #/tenant/NAME, #/cluster.

function route() {
  const hash = location.hash || '#/';
  const [path, query] = hash.slice(1).split('?');
  const params = new URLSearchParams(query || '');
  let page, nav;
  let m;
  if (path === '/tenants') { page = tenantListPage(params); nav = 'tenants'; }
  else if ((m = path.match(/^\/tenant\/(.+)$/))) { page = tenantPage(decodeURIComponent(m[1])); nav = 'tenants'; }
  else if (path === '/cluster') { page = clusterPage(); nav = 'cluster'; }
  else { page = overviewPage(); nav = 'overview'; }
  current.stop();
  current = page;
  const view = $('view');
  view.dataset.page = page.name;
  view.dataset.ready = 'false';
  if (page.tenant) view.dataset.tenant = page.tenant; else delete view.dataset.tenant;
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.nav === nav);
  document.title = 'headroom · ' + (page.tenant || page.name);
  page.render(view);
}

async function serverInfo() {
  try {
    const {data} = await getJSON('/v1/status');
    $('server-info').textContent = `server ${data.id} (${data.state}) · leader ${data.leader_id || 'none'}`;
  } catch (e) {
    $('server-info').textContent = 'server status unavailable: ' + e.message;
  }
}

window.addEventListener('hashchange', route);
route();
serverInfo();
runEvents();

})();
