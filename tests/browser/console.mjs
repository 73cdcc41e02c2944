// The operator console in headless Chromium, under the load that
// tests/operations/console.rs generates:
//
//   node tests/browser/console.mjs <admin-url> <user> <artifacts-dir> \
//     --key=<admin.key> --metrics=<url of /metrics> --allocations=<N>
//
// The console is opened the way an operator behind an SSH tunnel would
// (`ssh -L`): through a TCP forwarder this script runs on another port,
// as `http://localhost:<port>/console`, so the page sees a host and port
// that are not the listener's. Then, in order:
//   1. the page loads without the key and asks for it, having fetched no
//      data; a wrong key is refused (401) and asked for again;
//   2. with the key, the tiles show the N allocations, and a sample taken
//      after a read of /metrics holds relayed byte totals between that
//      read and the next one; the rates and signaling numbers are kept
//      for the test to check against the load;
//   3. the charts move: a later sample adds a point and redraws them;
//   4. the table lists the N allocations with a rate each; sorted by rate
//      (descending), its order is kept for the test;
//   5. the allocation with the lowest rate is ended from its row, after a
//      confirmation: the row goes, and the admin API no longer lists it;
//   6. the user is revoked from another row, after a confirmation: the
//      table empties and the revocation is listed.
// With --fleet=<a,b,...> (tests/fleet/instances.rs), step 1 is followed
// only by a look at the fleet table, which must list those instances.
// No CSP violation and no page error may happen. Screenshots go to the
// artifacts dir; one JSON summary line on stdout; exit 0 on success.

import net from 'node:net';
import { chromium } from 'playwright-core';

import { CHROMIUM_ARGS, Failure, Run } from './harness.mjs';

const OVERALL_MS = 120_000;
const STEP_MS = 25_000;

const run = new Run('console.mjs');
const { baseUrl: adminUrl, room: user, artifacts, options } = run;
const expected = Number(options.allocations);
const adminKey = options.key;
if (!adminKey || !options.metrics || !Number.isInteger(expected)) {
  console.error('console.mjs needs --key=, --metrics= and --allocations=');
  process.exit(2);
}
const summary = { ok: false };
let forwarder = null;

/** A TCP forwarder to the admin listener, as `ssh -L` would be. */
function forward(target) {
  return new Promise((resolve) => {
    const sockets = new Set();
    const server = net.createServer((client) => {
      const upstream = net.connect(Number(target.port), target.hostname);
      for (const s of [client, upstream]) sockets.add(s);
      const end = () => {
        client.destroy();
        upstream.destroy();
        sockets.delete(client);
        sockets.delete(upstream);
      };
      for (const s of [client, upstream]) {
        s.on('error', end);
        s.on('close', end);
      }
      client.pipe(upstream);
      upstream.pipe(client);
    });
    server.listen(0, '127.0.0.1', () =>
      resolve({
        port: server.address().port,
        close: () => {
          for (const s of sockets) s.destroy();
          server.close();
        },
      }),
    );
  });
}

/** The sum of every sample of metric `name` whose labels include `labels`. */
async function metric(name, labels = '') {
  const text = await (await fetch(options.metrics)).text();
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (labels && !line.includes(labels)) continue;
    sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

/** The admin API's allocations, asked directly (not through the page). */
async function listed() {
  const response = await fetch(new URL('/v1/allocations', adminUrl), {
    headers: { Authorization: `Bearer ${adminKey}` },
  });
  return (await response.json()).allocations;
}

/** Polls `probe` in the page until it returns a truthy value. */
async function until(page, what, probe, arg, ms = STEP_MS) {
  try {
    const handle = await page.waitForFunction(probe, arg, { timeout: ms, polling: 200 });
    return await handle.jsonValue();
  } catch {
    const status = await page.textContent('#status').catch(() => '?');
    throw new Failure(`${what}: not within ${ms} ms (status "${status}")`);
  }
}

/** The tiles as the page shows them: value, total and text. */
const tiles = (page) =>
  page.evaluate(() =>
    Object.fromEntries(
      [...document.querySelectorAll('[data-tile]')].map((t) => [
        t.dataset.tile,
        {
          value: t.dataset.value === '' ? null : Number(t.dataset.value),
          total: t.dataset.total === undefined || t.dataset.total === '' ? null : Number(t.dataset.total),
          text: t.querySelector('.stat-value').textContent,
          sub: t.querySelector('.stat-sub').textContent,
        },
      ]),
    ),
  );

/** A chart's sample count, last time and drawn pixels. */
const chartState = (page, id) =>
  page.evaluate((id) => {
    const figure = document.querySelector(`figure[data-chart="${id}"]`);
    const canvas = figure?.querySelector('canvas');
    return figure && { points: Number(figure.dataset.points), last: Number(figure.dataset.last), pixels: canvas.toDataURL() };
  }, id);

/** The table's rows, in the order shown. */
const rows = (page) =>
  page.evaluate(() =>
    [...document.querySelectorAll('#allocation-rows tr')].map((tr) => ({
      id: tr.dataset.id,
      user: tr.dataset.user,
      rate: tr.dataset.rate === '' ? null : Number(tr.dataset.rate),
      cells: [...tr.cells].map((td) => td.textContent),
    })),
  );

async function main() {
  forwarder = await forward(new URL(adminUrl));
  const consoleUrl = `http://localhost:${forwarder.port}/console`;
  run.browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: CHROMIUM_ARGS });
  const context = await run.browser.newContext({ viewport: { width: 1400, height: 1000 } });
  const page = await context.newPage();
  page.setDefaultTimeout(10_000);
  page.on('console', (msg) => run.consoleLines.push(`[console +${run.elapsed()}ms] ${msg.type()}: ${msg.text()}`));
  page.on('pageerror', (err) => run.pageErrors.push(err.message));
  const requests = [];
  page.on('request', (r) => requests.push({ url: r.url(), auth: r.headers().authorization ?? null }));

  // 1. The page, without the key: a form, and no data asked for.
  await page.goto(consoleUrl, { waitUntil: 'load' });
  await until(page, 'the key form', () => !document.getElementById('login').hidden);
  await page.screenshot({ path: `${artifacts}/1-key.png` });
  const early = requests.filter((r) => new URL(r.url).pathname.startsWith('/v1/'));
  if (early.length) throw new Failure(`the page asked for data before the key: ${JSON.stringify(early)}`);
  await page.fill('#key', 'not-the-admin-key-at-all-0123456789');
  await page.click('#open');
  const refused = await until(
    page,
    'the wrong key refused',
    () => !document.getElementById('login').hidden && !document.getElementById('key-error').hidden && document.getElementById('key-error').textContent,
  );
  if (!/401/.test(refused)) throw new Failure(`the wrong key's message: ${refused}`);
  summary.refused = refused;

  await page.fill('#key', adminKey);
  await page.click('#open');
  if (options.fleet) return fleetWalk(page, requests);

  // 2. With the key: the numbers, against /metrics.
  await until(
    page,
    `the allocations tile at ${expected}`,
    (n) => document.querySelector('[data-tile="allocations"]')?.dataset.value === String(n),
    expected,
  );
  const before = {
    to_peer: await metric('turnpike_relayed_bytes_total', 'direction="to_peer"'),
    to_client: await metric('turnpike_relayed_bytes_total', 'direction="to_client"'),
    at: Date.now(),
  };
  await until(
    page,
    'a sample after the first /metrics read',
    (at) => Number(document.querySelector('figure[data-chart="relayed_bits"]')?.dataset.last) > at,
    before.at,
  );
  const now = await tiles(page);
  const after = {
    to_peer: await metric('turnpike_relayed_bytes_total', 'direction="to_peer"'),
    to_client: await metric('turnpike_relayed_bytes_total', 'direction="to_client"'),
    allocations: await metric('turnpike_allocations'),
    sessions: await metric('turnpike_signaling_sessions'),
    rooms: await metric('turnpike_signaling_rooms'),
  };
  summary.tiles = now;
  summary.metrics = { before, after };
  for (const direction of ['to_peer', 'to_client']) {
    const total = now[direction]?.total;
    if (!(total >= before[direction] && total <= after[direction])) {
      throw new Failure(
        `${direction}: the console's total ${total} is not between /metrics before (${before[direction]}) and after (${after[direction]})`,
      );
    }
  }
  if (now.allocations.value !== after.allocations) {
    throw new Failure(`allocations: console ${now.allocations.value}, /metrics ${after.allocations}`);
  }
  if (now.signaling?.value !== after.sessions) {
    throw new Failure(`signaling sessions: console ${now.signaling?.value}, /metrics ${after.sessions}`);
  }

  // 3. The charts move.
  const first = await chartState(page, 'relayed_bits');
  await until(
    page,
    'a new sample',
    (last) => Number(document.querySelector('figure[data-chart="relayed_bits"]')?.dataset.last) > last,
    first.last,
  );
  // Drawn on the next animation frame.
  await page.evaluate(() => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve))));
  const second = await chartState(page, 'relayed_bits');
  summary.charts = {
    count: await page.locator('figure[data-chart]').count(),
    points: [first.points, second.points],
    redrawn: first.pixels !== second.pixels,
  };
  if (!(second.points > first.points) || !summary.charts.redrawn) {
    throw new Failure(`the chart did not move: ${JSON.stringify(summary.charts)}`);
  }

  // 4. The table, sorted by rate (descending).
  await until(
    page,
    `${expected} rows, each with a rate`,
    (n) => {
      const trs = [...document.querySelectorAll('#allocation-rows tr')];
      return trs.length === n && trs.every((tr) => tr.dataset.rate !== '');
    },
    expected,
  );
  await page.click('button[data-sort="rate"]');
  const sorted = await rows(page);
  const sortState = await page.getAttribute('th:has(button[data-sort="rate"])', 'aria-sort');
  summary.table = { sorted, sortState };
  if (sortState !== 'descending') throw new Failure(`sorted by rate: aria-sort ${sortState}`);
  await page.screenshot({ path: `${artifacts}/2-live.png`, fullPage: true });

  // 5. End the slowest allocation from its row.
  const victim = sorted.at(-1);
  await page.click(`#allocation-rows tr[data-id="${victim.id}"] button[data-action="end"]`);
  await until(page, 'the confirmation', () => document.getElementById('confirm').open);
  const question = await page.textContent('#confirm-title');
  await page.screenshot({ path: `${artifacts}/3-confirm.png` });
  await page.click('#confirm-ok');
  await until(
    page,
    'the ended row gone',
    (id) => !document.querySelector(`#allocation-rows tr[data-id="${id}"]`),
    victim.id,
  );
  const notice = await page.textContent('.notice.ok');
  const stillListed = (await listed()).some((a) => a.id === victim.id);
  if (stillListed) throw new Failure(`allocation ${victim.id} is still listed by the admin API`);
  summary.ended = { id: victim.id, question, notice, left: (await rows(page)).length };
  await page.screenshot({ path: `${artifacts}/4-ended.png`, fullPage: true });

  // 6. Revoke the user from another row: every allocation of theirs ends.
  const other = (await rows(page))[0];
  await page.click(`#allocation-rows tr[data-id="${other.id}"] button[data-action="revoke"]`);
  await until(page, 'the revocation confirmation', () => document.getElementById('confirm').open);
  await page.click('#confirm-ok');
  await until(
    page,
    'the table empty and the user revoked',
    (user) =>
      document.querySelectorAll('#allocation-rows tr').length === 0 &&
      !!document.querySelector(`#revocations li[data-user="${user}"]`),
    user,
  );
  summary.revoked = { user, listed: (await listed()).length };
  await page.screenshot({ path: `${artifacts}/5-revoked.png`, fullPage: true });

  finalChecks(requests);
}

/** With `--fleet=a,b`: the fleet table lists those instances. */
async function fleetWalk(page, requests) {
  const names = options.fleet.split(',');
  await until(
    page,
    `the fleet table listing ${names}`,
    (names) => {
      const listed = [...document.querySelectorAll('#fleet-rows tr')].map((tr) => tr.dataset.instance);
      return !document.getElementById('fleet-panel').hidden && names.every((n) => listed.includes(n));
    },
    names,
  );
  summary.fleet = await page.evaluate(() =>
    [...document.querySelectorAll('#fleet-rows tr')].map((tr) => ({
      instance: tr.dataset.instance,
      allocations: tr.dataset.allocations,
      cells: [...tr.cells].map((td) => td.textContent),
    })),
  );
  summary.tiles = await tiles(page);
  await page.screenshot({ path: `${artifacts}/fleet.png`, fullPage: true });
  finalChecks(requests);
}

/** Every data request carried the key; nothing was refused by the CSP. */
function finalChecks(requests) {
  const data = requests.filter((r) => new URL(r.url).pathname.startsWith('/v1/'));
  summary.requests = { data: data.length, hosts: [...new Set(requests.map((r) => new URL(r.url).host))] };
  const keyless = data.filter((r) => r.auth !== `Bearer ${adminKey}` && !r.auth?.includes('not-the-admin-key'));
  if (keyless.length) throw new Failure(`data requests without the key: ${JSON.stringify(keyless.slice(0, 3))}`);
  const csp = run.consoleLines.filter((l) => /Content Security Policy|Refused to/.test(l));
  if (csp.length || run.pageErrors.length) {
    throw new Failure(`CSP violations or page errors: ${JSON.stringify([...csp, ...run.pageErrors])}`);
  }
  summary.ok = true;
  console.log(JSON.stringify(summary));
}

await run.finish('the console walk', OVERALL_MS, main, {
  onFailure: async () => {
    console.log(JSON.stringify(summary));
  },
  onEnd: () => forwarder?.close(),
});
