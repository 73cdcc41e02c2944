// The operator console's entry module: the key form, then every few
// seconds the history (charts and the "now" tiles) and the tables of
// allocations and revocations, with the admin API's actions behind a
// confirmation. Nothing is fetched before a key is given; a refused key
// is forgotten and asked for again.

import { api, ApiError, key } from './api.js';
import { Charts } from './charts.js';
import { confirmAction } from './confirm.js';
import { si } from './format.js';
import { AllocationTable } from './table.js';

const $ = (id) => document.getElementById(id);

const ui = {
  login: $('login'),
  form: $('key-form'),
  key: $('key'),
  keyError: $('key-error'),
  console: $('console'),
  status: $('status'),
  forget: $('forget-key'),
  tiles: $('tiles'),
  note: $('history-note'),
  notices: $('notices'),
  revocations: $('revocations'),
  revocationCount: $('revocation-count'),
  noRevocations: $('no-revocations'),
  fleetPanel: $('fleet-panel'),
  fleetRows: $('fleet-rows'),
  fleetCount: $('fleet-count'),
};

const charts = new Charts($('charts'));
const table = new AllocationTable(
  {
    head: $('allocations').tHead,
    body: $('allocation-rows'),
    empty: $('no-allocations'),
    count: $('allocation-count'),
    filter: $('filter'),
  },
  act,
);

let interval = 5000;
let timer = null;
let busy = false;

function setStatus(text, kind) {
  ui.status.textContent = text;
  ui.status.className = `status${kind ? ` is-${kind}` : ''}`;
}

function notify(text, kind = 'info', ms = 6000) {
  const div = document.createElement('div');
  div.className = `notice ${kind}`;
  div.textContent = text;
  ui.notices.append(div);
  setTimeout(() => div.remove(), ms);
}

// ---- the "now" tiles, from the newest sample ----

const sum = (values) => (values.some((v) => v !== null) ? values.reduce((a, v) => a + (v ?? 0), 0) : null);
const latest = (chart, ...labels) => sum(labels.map((l) => charts.latest(chart, l)));
const AUTH_FAILURES = [
  'unknown_user',
  'expired_credential',
  'bad_integrity',
  'stale_nonce',
  'credential_too_long',
  'rate_limited',
  'revoked',
];

const TILES = [
  {
    id: 'allocations',
    chart: 'allocations',
    title: 'Allocations',
    value: () => latest('allocations', 'total'),
    text: (v) => si(v),
    sub: () => ['udp', 'tcp', 'tls'].map((t) => `${t} ${si(latest('allocations', t))}`).join(' · '),
  },
  {
    id: 'to_peer',
    chart: 'relayed_bits',
    title: 'Relayed to peers',
    value: () => latest('relayed_bits', 'to_peer'),
    text: (v) => si(v, 'bit/s'),
    total: () => charts.total('relayed_bits', 'to_peer'),
    sub: () => `${si(charts.total('relayed_bits', 'to_peer'), 'B')} so far`,
  },
  {
    id: 'to_client',
    chart: 'relayed_bits',
    title: 'Relayed to clients',
    value: () => latest('relayed_bits', 'to_client'),
    text: (v) => si(v, 'bit/s'),
    total: () => charts.total('relayed_bits', 'to_client'),
    sub: () => `${si(charts.total('relayed_bits', 'to_client'), 'B')} so far`,
  },
  {
    id: 'packets',
    chart: 'relayed_packets',
    title: 'Packets',
    value: () => latest('relayed_packets', 'to_peer', 'to_client'),
    text: (v) => si(v, '/s'),
    sub: () => `drops ${si(latest('relayed_packets', 'dropped_rate_limit', 'dropped_handoff'), '/s')}`,
  },
  {
    id: 'authentications',
    chart: 'authentications',
    title: 'Authentications',
    value: () => latest('authentications', 'accepted'),
    text: (v) => si(v, '/s'),
    sub: () => `failures ${si(latest('authentications', ...AUTH_FAILURES), '/s')}`,
  },
  {
    id: 'shed',
    chart: 'shed',
    title: 'Shed and refused',
    value: () => latest('shed', 'shed_300', 'refused_486', 'refused_508'),
    text: (v) => si(v, '/s'),
    sub: () =>
      `300 ${si(latest('shed', 'shed_300'))} · 486 ${si(latest('shed', 'refused_486'))} · 508 ${si(latest('shed', 'refused_508'))}`,
  },
  {
    id: 'signaling',
    chart: 'signaling',
    title: 'Signaling sessions',
    value: () => latest('signaling', 'sessions'),
    text: (v) => si(v),
    sub: () => `rooms ${si(latest('signaling', 'rooms'))} · peers ${si(latest('signaling', 'peers'))}`,
  },
  {
    id: 'fleet',
    chart: 'fleet',
    title: 'Fleet instances',
    value: () => latest('fleet', 'instances'),
    text: (v) => si(v),
    sub: () => {
      const up = latest('fleet_link', 'redis_up');
      const redis = up === null ? 'Redis –' : up > 0 ? 'Redis up' : 'Redis down';
      return `${redis} · ${si(latest('fleet', 'allocations'))} allocations`;
    },
  },
];

function renderTiles() {
  const tiles = TILES.filter((t) => charts.has(t.chart)).map((t) => {
    const value = t.value();
    const div = document.createElement('div');
    div.className = 'stat';
    div.dataset.tile = t.id;
    div.dataset.value = value === null ? '' : String(value);
    if (t.total) div.dataset.total = String(t.total() ?? '');
    const title = document.createElement('span');
    title.className = 'stat-title';
    title.textContent = t.title;
    const strong = document.createElement('strong');
    strong.className = 'stat-value';
    strong.textContent = t.text(value);
    const sub = document.createElement('span');
    sub.className = 'stat-sub';
    sub.textContent = t.sub();
    div.append(title, strong, sub);
    return div;
  });
  ui.tiles.replaceChildren(...tiles);
}

// ---- polling ----

async function refresh() {
  const since = charts.lastTime();
  const view = await api.history(since);
  interval = Math.max(1, view.interval_s) * 1000;
  if (since === undefined) charts.load(view);
  else charts.append(view);
  renderTiles();
  const minutes = Math.round((view.capacity * view.interval_s) / 60);
  ui.note.textContent =
    charts.lastTime() === undefined
      ? 'No sample yet: the first comes within seconds of the start.'
      : `A sample every ${view.interval_s} s; the server keeps the last ${minutes} minutes (${view.capacity} samples a series, ${Math.round(view.bytes / 1024)} KiB in all).`;
  const fleet = charts.has('fleet');
  const [allocations, revocations, instances] = await Promise.all([
    api.allocations(),
    api.revocations(),
    fleet ? api.fleet() : null,
  ]);
  table.update(allocations.allocations, Date.now());
  renderRevocations(revocations.revocations);
  ui.fleetPanel.hidden = !fleet;
  if (instances) renderFleet(instances.instances);
}

function renderFleet(list) {
  ui.fleetRows.replaceChildren(
    ...list.map((i) => {
      const tr = document.createElement('tr');
      tr.dataset.instance = i.instance;
      tr.dataset.allocations = String(i.allocations);
      if (i.silent) tr.className = 'silent';
      const heard = `${i.silent ? 'silent, ' : ''}${Math.round(i.heard_ms_ago / 1000)} s ago`;
      const cells = [
        [i.own ? `${i.instance} (this one)` : i.instance, ''],
        [heard, ''],
        [si(i.allocations), 'num'],
        [si(i.to_peer_bps, 'bit/s'), 'num'],
        [si(i.to_client_bps, 'bit/s'), 'num'],
        [si(i.sessions), 'num'],
        [si(i.rooms), 'num'],
      ];
      for (const [text, className] of cells) {
        const td = document.createElement('td');
        td.textContent = text;
        td.className = className;
        tr.append(td);
      }
      return tr;
    }),
  );
  ui.fleetCount.textContent = String(list.filter((i) => !i.silent).length);
}

function renderRevocations(list) {
  ui.revocations.replaceChildren(
    ...list.map((r) => {
      const li = document.createElement('li');
      li.dataset.user = r.username;
      li.textContent = `${r.username} — until ${new Date(r.until_unix * 1000).toLocaleString()}`;
      return li;
    }),
  );
  ui.revocationCount.textContent = String(list.length);
  ui.noRevocations.hidden = list.length > 0;
}

async function poll() {
  if (busy) return;
  busy = true;
  try {
    await refresh();
    setStatus('Live', 'joined');
  } catch (e) {
    failed(e);
  } finally {
    busy = false;
  }
}

function schedule() {
  clearTimeout(timer);
  timer = setTimeout(async () => {
    await poll();
    if (key.get()) schedule();
  }, interval);
}

/** What a failed request means for the page. */
function failed(e) {
  if (e instanceof ApiError && e.status === 401) {
    signOut('The key was refused (401). Give the admin API’s key.');
  } else if (e instanceof ApiError && e.status === 0) {
    setStatus('Unreachable, retrying', 'connecting');
  } else {
    setStatus(`Error: ${e.message}`, 'error');
  }
}

function signOut(message) {
  clearTimeout(timer);
  key.forget();
  ui.console.hidden = true;
  ui.forget.hidden = true;
  ui.login.hidden = false;
  ui.keyError.textContent = message ?? '';
  ui.keyError.hidden = !message;
  setStatus('Not connected');
  ui.key.focus();
}

async function start() {
  ui.login.hidden = true;
  ui.console.hidden = false;
  ui.forget.hidden = false;
  setStatus('Connecting…', 'connecting');
  await poll();
  if (key.get()) schedule();
}

// ---- the admin API's actions, each confirmed first ----

async function act(action, allocation) {
  const { id, user, client } = allocation;
  const steps = {
    end: [
      `End allocation ${id}?`,
      `The allocation of ${user} from ${client} ends now, as an expiry would: its relay ports close, and its client’s next refresh is refused.`,
      'End the allocation',
      async () => {
        await api.endAllocation(id);
        return `Allocation ${id} ended.`;
      },
    ],
    'end-user': [
      `End every allocation of ${user}?`,
      `Every allocation of ${user}, on every transport, ends now. The user may allocate again.`,
      'End them',
      async () => `${(await api.endUser(user)).ended} allocation(s) of ${user} ended.`,
    ],
    revoke: [
      `Revoke ${user}?`,
      `${user} is refused on every transport from now on (401, as a bad credential) until its credential would have expired, and its allocations end now. A revocation cannot be taken back before it lapses.`,
      'Revoke',
      async () => `${user} revoked; ${(await api.revoke(user)).ended} allocation(s) ended.`,
    ],
  }[action];
  if (!steps) return;
  const [title, text, button, run] = steps;
  if (!(await confirmAction(title, text, button))) return;
  try {
    notify(await run(), 'ok');
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return failed(e);
    notify(`${title.replace(/\?$/, '')} failed: ${e.message}`, 'error');
  }
  await poll();
}

// ---- wiring ----

ui.form.addEventListener('submit', (event) => {
  event.preventDefault();
  const value = ui.key.value.trim();
  if (!value) {
    ui.keyError.textContent = 'The key is empty.';
    ui.keyError.hidden = false;
    return;
  }
  key.set(value);
  ui.key.value = '';
  ui.keyError.hidden = true;
  start();
});

ui.forget.addEventListener('click', () => signOut());

if (key.get()) start();
else signOut();
