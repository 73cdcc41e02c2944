// One walk through the demo page's call features in headless Chromium,
// every peer connection forced onto turnpike's TURN relay:
//
//   node tests/browser/features.mjs <base-url> <room> <artifacts-dir> --admin=<url> --admin-key=<key>
//
// alice and bob join (bob's page through a TCP proxy this script runs, so
// that it can cut his WebSocket), then, in order:
//   1. chat each way over the data channel, with an unread mark on bob;
//   2. the stats panel shows a relay <-> relay pair, round trip, bitrates
//      and the video resolution;
//   3. a 6 MiB file from alice to bob, progress seen on both sides, its
//      SHA-256 checked on bob's side against the one computed here; then a
//      16 MiB one that alice cancels mid-way (bob sees it cancelled), and a
//      small one after it that must arrive intact;
//   4. alice shares her screen (Chromium's fake capture of the window) and
//      bob decodes it at that size, then she switches back to the camera;
//      then she picks another microphone, which replaces the one sent;
//   5. bob's WebSocket is cut and new connections refused for a while; in
//      that time alice mutes (a signal to bob, queued by the server) and
//      bob turns his camera off (a signal to alice, queued by his page);
//      bob's page resumes: nobody saw a peer-left and both signals arrive;
//   6. fresh TURN credentials (short credential_ttl) arrive before the
//      first ones expire and are applied with setConfiguration; once the
//      first ones have expired, the server's admin API ends alice's relays
//      (as a TURN server that went away would): the pages see the call
//      disconnected, restart ICE by themselves, gather new relays with the
//      fresh credentials, and media flows again over relay <-> relay;
//   7. carol joins: a chat message from her reaches both, and one from
//      alice reaches both others.
// Screenshots of each state go to the artifacts dir. Prints one JSON
// summary line on stdout; exits 0 on success, 1 with a reason on stderr.
// Every wait is bounded, and the whole run is limited to OVERALL_MS.

import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

import { CHROMIUM_ARGS as BASE_CHROMIUM_ARGS, Failure, Run, sleep, within } from './harness.mjs';

const OVERALL_MS = 150_000;
const STEP_MS = 20_000;
const POLL_MS = 200;
const FILE_BYTES = 6 * 1024 * 1024;
const CANCEL_BYTES = 16 * 1024 * 1024;
const BLOCK_MS = 2_500;
// The page asks the camera for 960x540 at most; the shared screen is the
// window (1400x860 here).
const CAMERA_MAX_WIDTH = 960;

const CHROMIUM_ARGS = [...BASE_CHROMIUM_ARGS, '--auto-select-desktop-capture-source=Entire screen'];

const run = new Run('features.mjs');
const { baseUrl, room, artifacts } = run;
const elapsed = () => run.elapsed();
const steps = {};
let proxy = null;
// Files are handed to the page by path, so Chromium reads them from disk.
// Given as a buffer, they would be decoded from base64 on the page's main
// thread, which held it for seconds on a loaded machine and delayed the
// page's WebSocket messages (a credential refresh seen late).
const fileDir = mkdtempSync(join(tmpdir(), 'turnpike-features-'));

/** Writes `bytes` to a file called `name` and returns its path. */
function fileOf(name, bytes) {
  const path = join(fileDir, name);
  writeFileSync(path, bytes);
  return path;
}


/** Polls `probe` (in node) until it returns a truthy value, at most `ms`. */
async function until(what, probe, ms = STEP_MS) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    last = await within(10_000, `${what} (probe)`, probe());
    if (last && last.ok !== false) return last;
    if (Date.now() > deadline) throw new Failure(`${what}: not within ${ms} ms (last: ${JSON.stringify(last)})`);
    await sleep(POLL_MS);
  }
}

/** Times a step of the walk for the summary. */
async function step(name, fn) {
  const t0 = Date.now();
  const out = await fn();
  steps[name] = Date.now() - t0;
  return out;
}

// A TCP proxy between bob's page and the server, which can cut every
// connection through it (no close frame: what a network blip does) and
// refuse new ones for a while.
function startProxy(target) {
  const sockets = new Set();
  let blocked = false;
  let cuts = 0;
  const server = net.createServer((client) => {
    if (blocked) {
      client.destroy();
      return;
    }
    const upstream = net.connect(Number(target.port), target.hostname);
    sockets.add(client);
    sockets.add(upstream);
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', end);
    upstream.on('error', end);
    client.on('close', end);
    upstream.on('close', end);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      resolve({
        url: `http://127.0.0.1:${server.address().port}/`,
        block() {
          blocked = true;
        },
        unblock() {
          blocked = false;
        },
        cut() {
          cuts += 1;
          for (const s of sockets) s.destroy();
          sockets.clear();
        },
        get cuts() {
          return cuts;
        },
        close() {
          server.close();
          for (const s of sockets) s.destroy();
        },
      });
    });
  });
}

const openParticipant = (label, base) => run.openParticipant(label, base, { width: 1400, height: 860 });

async function joinRoom(p, name) {
  await run.joinRoom(p, name, STEP_MS);
  p.id = await p.page.evaluate(() => window.turnpikeDemo.myId);
  p.joinedIce = await p.page.evaluate(() => window.turnpikeDemo.iceServers);
}

/** What a page knows about each remote peer, from getStats() directly. */
function peersOf(p) {
  return p.page.evaluate(async () => {
    const demo = window.turnpikeDemo;
    const out = {};
    for (const [id, peer] of demo.peers) {
      const report = await peer.pc.getStats();
      let pair = null;
      report.forEach((s) => {
        if (!pair && s.type === 'transport' && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId);
      });
      const local = pair ? report.get(pair.localCandidateId) : null;
      const remote = pair ? report.get(pair.remoteCandidateId) : null;
      let video = null;
      report.forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'video') video = s;
      });
      out[id] = {
        name: peer.name,
        ice: peer.pc.iceConnectionState,
        localType: local ? local.candidateType : null,
        remoteType: remote ? remote.candidateType : null,
        localAddress: local ? `${local.address}:${local.port}` : null,
        framesDecoded: video ? video.framesDecoded || 0 : 0,
        width: video ? video.frameWidth || 0 : 0,
        height: video ? video.frameHeight || 0 : 0,
        chat: peer.chat ? peer.chat.readyState : null,
        files: peer.files ? peer.files.readyState : null,
        remoteState: peer.remote,
      };
    }
    return out;
  });
}

/**
 * Resolves once `p` decodes growing video from `peerId` over relay <-> relay
 * with `extra` true: more frames decoded than when all that first held (a
 * shared screen may send few frames a second, so not between two polls).
 */
async function mediaFlows(p, peerId, what, extra = () => true, ms = STEP_MS) {
  let baseline = null;
  return until(`${p.label}: ${what}`, async () => {
    const peers = await peersOf(p);
    const peer = peers[peerId];
    if (!peer) return { ok: false, why: 'no such peer', ids: Object.keys(peers) };
    const holds = peer.localType === 'relay' && peer.remoteType === 'relay' && extra(peer);
    if (!holds) {
      baseline = null;
      return { ok: false, holds, ...peer };
    }
    if (baseline === null) {
      baseline = peer.framesDecoded;
      return { ok: false, baseline, ...peer };
    }
    return peer.framesDecoded > baseline ? peer : { ok: false, baseline, ...peer };
  }, ms);
}

/** Ends every allocation of TURN user `user` through the server's admin
 * API (`--admin=<url> --admin-key=<key>`); the number ended. */
async function endAllocationsOf(user) {
  const { admin, 'admin-key': key } = run.options;
  if (!admin || !key) throw new Failure('features.mjs needs --admin=<url> and --admin-key=<key>');
  const response = await fetch(new URL(`/v1/users/${encodeURIComponent(user)}/allocations`, admin), {
    method: 'DELETE',
    headers: { authorization: `Bearer ${key}` },
    signal: AbortSignal.timeout(10_000),
  });
  const body = await response.json();
  if (!response.ok) throw new Failure(`admin API: ${response.status} ${JSON.stringify(body)}`);
  return body.ended;
}

function chatOf(p) {
  return p.page.evaluate(() => window.turnpikeDemo.chat.map((m) => ({ from: m.from, name: m.name, text: m.text, unread: m.unread, mine: m.mine })));
}

async function sendChat(p, text) {
  if (await p.page.isHidden('#side')) await p.page.click('#panel');
  await p.page.click('.side-tab[data-tab="chat"]');
  await p.page.fill('#chat-input', text);
  await p.page.press('#chat-input', 'Enter');
}

async function gotChat(p, from, text) {
  return until(`${p.label}: chat "${text}" from ${from.label}`, async () => {
    const chat = await chatOf(p);
    return chat.find((m) => m.from === from.id && m.text === text && !m.mine) || null;
  });
}

async function shot(p, name) {
  await sleep(150);
  await p.page.screenshot({ path: join(artifacts, `${name}.png`) });
}

async function dumpPage(p) {
  try {
    const events = await p.page.evaluate(() => window.turnpikeDemo.events.slice(-150));
    console.error(`---- ${p.label}: page events ----\n${events.join('\n')}`);
    console.error(`---- ${p.label}: peers ----\n${JSON.stringify(await peersOf(p))}`);
  } catch (e) {
    console.error(`(${p.label}: page state unavailable: ${e.message})`);
  }
  await p.page.screenshot({ path: join(artifacts, `failed-${p.label}.png`) }).catch(() => {});
}

const everyone = [];

async function main() {
  proxy = await startProxy(new URL(baseUrl));
  run.browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: CHROMIUM_ARGS,
    timeout: 30_000,
  });
  const alice = await openParticipant('alice', baseUrl);
  const bob = await openParticipant('bob', proxy.url);
  everyone.push(alice, bob);

  await step('call', async () => {
    await joinRoom(alice, 'Alice');
    await joinRoom(bob, 'Bob');
    await mediaFlows(alice, bob.id, 'video from bob', (p) => p.chat === 'open' && p.files === 'open');
    await mediaFlows(bob, alice.id, 'video from alice', (p) => p.chat === 'open' && p.files === 'open');
  });

  // 1. Chat each way; bob's panel is closed, so alice's message is unread.
  const chat = await step('chat', async () => {
    await sendChat(alice, 'Hello Bob, can you read me?');
    const atBob = await gotChat(bob, alice, 'Hello Bob, can you read me?');
    if (atBob.name !== 'Alice' || !atBob.unread) throw new Failure(`bob's copy: ${JSON.stringify(atBob)}`);
    const badge = await bob.page.textContent('#unread');
    if ((await bob.page.isHidden('#unread')) || badge !== '1') throw new Failure(`bob's unread badge: "${badge}"`);
    await shot(bob, '1-chat-unread-bob');
    await sendChat(bob, 'Loud and clear, Alice.');
    const atAlice = await gotChat(alice, bob, 'Loud and clear, Alice.');
    if (!(await bob.page.isHidden('#unread'))) throw new Failure('bob opened the chat but the unread badge stays');
    const times = await alice.page.$$eval('#chat-log time', (els) => els.map((e) => e.textContent));
    if (times.length !== 2 || times.some((t) => !/\d/.test(t))) throw new Failure(`chat timestamps: ${times}`);
    await shot(alice, '1-chat-alice');
    return { atBob, atAlice, times };
  });

  // 2. The stats panel.
  const stats = await step('stats', async () => {
    await alice.page.click('.side-tab[data-tab="stats"]');
    return until('alice: stats panel with a relay pair', async () => {
      const panel = await alice.page.evaluate(() => {
        const out = {};
        for (const dd of document.querySelectorAll('#stats dd')) out[dd.dataset.stat] = dd.textContent;
        return out;
      });
      const ok =
        /^relay(\/\w+)? ⇄ relay \((udp|tcp)\)$/.test(panel.pair || '') &&
        /\d+ ms/.test(panel.rtt || '') &&
        /\d+ kbit\/s/.test(panel.in || '') &&
        /\d+ kbit\/s/.test(panel.out || '') &&
        /%/.test(panel.loss || '') &&
        /\d+×\d+/.test(panel.video || '');
      return ok ? panel : { ok: false, ...panel };
    });
  });
  await shot(alice, '2-stats-alice');

  // 3. A file, alice -> bob.
  const file = await step('file', async () => {
    const bytes = randomBytes(FILE_BYTES);
    const sha256 = createHash('sha256').update(bytes).digest('hex');
    await alice.page.click('.side-tab[data-tab="files"]');
    await bob.page.click('.side-tab[data-tab="files"]');
    await alice.page.selectOption('#file-to', bob.id);
    await alice.page.setInputFiles('#file-input', fileOf('random.bin', bytes));
    const transfer = (p, dir) =>
      p.page.evaluate((d) => {
        const t = Array.from(window.turnpikeDemo.transfers.values()).find((x) => x.dir === d);
        return t ? { state: t.state, done: t.done, size: t.size, progressEvents: t.progressEvents, error: t.error || null } : null;
      }, dir);
    const seen = { alice: new Set(), bob: new Set() };
    const done = await until(
      'bob: file received',
      async () => {
        const [out, inn] = [await transfer(alice, 'out'), await transfer(bob, 'in')];
        if (out) seen.alice.add(out.done);
        if (inn) seen.bob.add(inn.done);
        if ((out && out.state === 'failed') || (inn && inn.state === 'failed')) throw new Failure(`transfer failed: ${JSON.stringify({ out, inn })}`);
        return inn && inn.state === 'done' && out && out.state === 'sent' ? { out, inn } : null;
      },
      60_000,
    );
    const received = await bob.page.evaluate(async () => {
      const t = Array.from(window.turnpikeDemo.transfers.values()).find((x) => x.dir === 'in');
      const digest = await crypto.subtle.digest('SHA-256', await t.blob.arrayBuffer());
      const link = document.querySelector('.transfer a.transfer-download');
      return {
        sha256: Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join(''),
        size: t.blob.size,
        link: link ? { download: link.download, blob: link.href.startsWith('blob:') } : null,
        progressValue: document.querySelector('.transfer progress')?.value,
      };
    });
    if (received.sha256 !== sha256) throw new Failure(`SHA-256 on bob's side ${received.sha256}, sent ${sha256}`);
    if (!received.link || received.link.download !== 'random.bin' || !received.link.blob) {
      throw new Failure(`no download link on bob's side: ${JSON.stringify(received.link)}`);
    }
    const partial = (set) => Array.from(set).filter((v) => v > 0 && v < FILE_BYTES).length;
    // Progress: the pages re-render it at most every 100 ms; each side
    // must have shown it more than at the start and the end.
    if (done.out.progressEvents < 3 || done.inn.progressEvents < 3) {
      throw new Failure(`too few progress updates: ${JSON.stringify(done)}`);
    }
    await shot(bob, '3-file-bob');
    await shot(alice, '3-file-alice');
    return { bytes: FILE_BYTES, sha256, received, done, partialSamples: { alice: partial(seen.alice), bob: partial(seen.bob) } };
  });

  // 3b. A bigger file cancelled by its sender mid-way; bob sees it
  // cancelled, and a small file right after it arrives intact (the rest of
  // the cancelled one is not taken for it).
  const cancel = await step('cancel', async () => {
    const big = randomBytes(CANCEL_BYTES);
    await alice.page.setInputFiles('#file-input', fileOf('big.bin', big));
    const stoppedAt = await alice.page.evaluate(
      (ms) =>
        new Promise((resolve, reject) => {
          const deadline = Date.now() + ms;
          const poll = () => {
            const t = Array.from(window.turnpikeDemo.transfers.values()).find((x) => x.dir === 'out' && x.name === 'big.bin');
            if (t && t.state === 'sending' && t.done > 0) {
              t.el.cancel.click();
              resolve({ done: t.done, state: t.state });
            } else if (t && t.state !== 'waiting' && t.state !== 'sending') {
              reject(new Error(`the big file was ${t.state} before it could be cancelled`));
            } else if (Date.now() > deadline) {
              reject(new Error('the big file never started'));
            } else {
              setTimeout(poll, 5);
            }
          };
          poll();
        }),
      STEP_MS,
    );
    if (stoppedAt.state !== 'cancelled' || !(stoppedAt.done < CANCEL_BYTES)) {
      throw new Failure(`cancel: ${JSON.stringify(stoppedAt)}`);
    }
    const atBob = await until("bob: the big file cancelled by alice", () =>
      bob.page.evaluate(() => {
        const t = Array.from(window.turnpikeDemo.transfers.values()).find((x) => x.dir === 'in' && x.name === 'big.bin');
        return t && t.state === 'cancelled' ? { state: t.state, done: t.done, url: t.url, error: t.error } : null;
      }),
    );
    if (atBob.url) throw new Failure('a cancelled file has a download link');
    const small = randomBytes(64 * 1024);
    const smallSha = createHash('sha256').update(small).digest('hex');
    await alice.page.setInputFiles('#file-input', fileOf('small.bin', small));
    const got = await until('bob: the small file after the cancelled one', () =>
      bob.page.evaluate(async () => {
        const t = Array.from(window.turnpikeDemo.transfers.values()).find((x) => x.dir === 'in' && x.name === 'small.bin');
        if (!t || t.state !== 'done') return null;
        const digest = await crypto.subtle.digest('SHA-256', await t.blob.arrayBuffer());
        return { size: t.blob.size, sha256: Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('') };
      }),
    );
    if (got.sha256 !== smallSha) throw new Failure(`the file after a cancelled one arrived altered: ${JSON.stringify(got)}`);
    await shot(bob, '3-cancelled-bob');
    return { stoppedAt, atBob, small: got };
  });

  // 4. Screen sharing, in place of the camera and back.
  const screen = await step('screen', async () => {
    await alice.page.click('#share');
    // Chromium's fake capture of the "entire screen" is the window's size.
    const size = await until('alice: sharing', () =>
      alice.page.evaluate(() => {
        const screen = window.turnpikeDemo.screen;
        if (!screen) return null;
        const { width, height } = screen.track.getSettings();
        return { width, height, label: screen.track.label };
      }),
    );
    if (!(size.width > CAMERA_MAX_WIDTH)) throw new Failure(`the shared screen is no larger than the camera: ${JSON.stringify(size)}`);
    const shared = await mediaFlows(
      bob,
      alice.id,
      'the shared screen decoded',
      // Wider than the camera can be, about as wide as the capture. (Its
      // height is not compared: Chromium's fake capture of the window
      // reports the viewport's height in its settings, and sends frames
      // without the part the browser's own UI would take.)
      (p) => p.width > CAMERA_MAX_WIDTH && Math.abs(p.width - size.width) <= 16 && p.height > 0 && p.remoteState.screen === true,
    );
    await shot(bob, '4-screen-bob');
    await shot(alice, '4-screen-alice');
    await alice.page.click('#share');
    const back = await mediaFlows(
      bob,
      alice.id,
      'the camera again',
      (p) => p.width > 0 && p.width <= CAMERA_MAX_WIDTH && p.remoteState.screen === false,
    );
    return { capture: size, shared: { width: shared.width, height: shared.height }, back: { width: back.width, height: back.height } };
  });

  // 4b. Another microphone, chosen in the devices tab, replaces the track
  // sent to bob.
  const devices = await step('devices', async () => {
    if (await alice.page.isHidden('#side')) await alice.page.click('#panel');
    await alice.page.click('.side-tab[data-tab="devices"]');
    const options = await until('alice: microphones listed', async () => {
      const list = await alice.page.$$eval('#mic-select option', (os) => os.map((o) => ({ value: o.value, label: o.textContent, selected: o.selected })));
      return list.length >= 2 ? list : null;
    });
    const other = options.find((o) => !o.selected);
    await alice.page.selectOption('#mic-select', other.value);
    const sent = await until('alice: the other microphone is sent', () =>
      alice.page.evaluate(
        ({ id, label }) => {
          const peer = window.turnpikeDemo.peers.get(id);
          const sender = peer.pc.getSenders().find((s) => s.track && s.track.kind === 'audio');
          return sender && sender.track.label === label && sender.track.readyState === 'live' ? sender.track.label : null;
        },
        { id: bob.id, label: other.label },
      ),
    );
    await shot(alice, '4-devices-alice');
    return { microphones: options.map((o) => o.label), sent };
  });

  // 5. Bob's WebSocket is cut.
  const blip = await step('blip', async () => {
    const before = await bob.page.evaluate(() => ({ id: window.turnpikeDemo.myId, resumes: window.turnpikeDemo.resumes }));
    proxy.block();
    proxy.cut();
    await until('bob: reconnecting', () => bob.page.evaluate(() => window.turnpikeDemo.reconnecting));
    await shot(bob, '5-reconnecting-bob');
    await alice.page.click('#mute');
    await bob.page.click('#camera');
    await sleep(BLOCK_MS);
    proxy.unblock();
    const after = await until('bob: resumed', () =>
      bob.page.evaluate(() => {
        const d = window.turnpikeDemo;
        return !d.reconnecting && d.resumes > 0 ? { id: d.myId, resumes: d.resumes, status: document.getElementById('status').textContent } : null;
      }),
    );
    if (after.id !== before.id) throw new Failure(`bob's id changed across the resume: ${before.id} -> ${after.id}`);
    await until("bob: alice's mute, sent during the blip", async () => (await peersOf(bob))[alice.id]?.remoteState.audio === false);
    await until("alice: bob's camera off, sent during the blip", async () => (await peersOf(alice))[bob.id]?.remoteState.video === false);
    const aliceEvents = await alice.page.evaluate(() => window.turnpikeDemo.events.filter((e) => /peer removed|peer-left/.test(e)));
    if (aliceEvents.length) throw new Failure(`alice saw bob leave: ${aliceEvents}`);
    const aliceSeesBob = await alice.page.evaluate((id) => window.turnpikeDemo.peers.has(id), bob.id);
    if (!aliceSeesBob) throw new Failure("bob's tile is gone from alice's page");
    await shot(bob, '5-resumed-bob');
    await alice.page.click('#mute');
    await bob.page.click('#camera');
    await mediaFlows(alice, bob.id, 'video from bob after the resume');
    return { before, after, cuts: proxy.cuts };
  });

  // 6. Fresh credentials before expiry, then an ICE restart on them.
  const refresh = await step('refresh', async () => {
    const firstUser = alice.joinedIce.find((s) => s.username).username;
    const firstExpiry = Number(firstUser.split(':')[0]) * 1000;
    const pushed = await until(
      'alice: fresh iceServers',
      () => alice.page.evaluate(() => window.turnpikeDemo.iceRefreshes[0] || null),
      40_000,
    );
    if (!(pushed.at < firstExpiry)) throw new Failure(`refresh at ${pushed.at} is not before the expiry ${firstExpiry}`);
    // On a slow machine a later refresh may have come already: the one in
    // force must be one of those pushed, read together with the config.
    const { applied, pushedUsers } = await alice.page.evaluate(
      (id) => ({
        applied: window.turnpikeDemo.peers.get(id).pc.getConfiguration().iceServers.map((s) => s.username || null),
        pushedUsers: window.turnpikeDemo.iceRefreshes.map((r) => r.username),
      }),
      bob.id,
    );
    if (!applied.some((u) => u && pushedUsers.includes(u))) {
      throw new Failure(`setConfiguration not applied: ${applied} vs ${pushedUsers}`);
    }
    // Once the first credentials of both pages have expired, the relays
    // alice got with hers are ended (the admin API), as when a TURN server
    // goes away: the pages see the call disconnected and restart ICE by
    // themselves, and the new relays can only come from fresh credentials.
    const bobUser = bob.joinedIce.find((s) => s.username).username;
    const expiredAt = Math.max(firstExpiry, Number(bobUser.split(':')[0]) * 1000) + 1000;
    await until('bob: fresh iceServers', () => bob.page.evaluate(() => window.turnpikeDemo.iceRefreshes[0] || null), 40_000);
    if (Date.now() < expiredAt) await sleep(expiredAt - Date.now());
    const oldRelay = (await peersOf(alice))[bob.id].localAddress;
    await mediaFlows(alice, bob.id, 'video from bob after the first credential expired');
    const ended = await endAllocationsOf(firstUser);
    if (!(ended >= 1)) throw new Failure(`the admin API ended ${ended} allocations of ${firstUser}`);
    await until('alice: the call disconnected', async () => (await peersOf(alice))[bob.id]?.ice !== 'connected');
    const restarted = await mediaFlows(alice, bob.id, 'video over new relays after the ICE restart', (p) => p.localAddress !== oldRelay, 40_000);
    await mediaFlows(bob, alice.id, 'video at bob after the ICE restart');
    const refreshedUsers = {
      alice: await alice.page.evaluate(() => window.turnpikeDemo.iceRefreshes.map((r) => r.username)),
      bob: await bob.page.evaluate(() => window.turnpikeDemo.iceRefreshes.map((r) => r.username)),
    };
    await alice.page.click('.side-tab[data-tab="stats"]');
    await shot(alice, '6-refreshed-alice');
    return { firstUser, pushed, applied, ended, oldRelay, newRelay: restarted.localAddress, refreshedUsers };
  });

  // 7. A room of three.
  const three = await step('three', async () => {
    const carol = await openParticipant('carol', baseUrl);
    everyone.push(carol);
    await joinRoom(carol, 'Carol');
    for (const [p, other] of [
      [carol, alice],
      [carol, bob],
      [alice, carol],
      [bob, carol],
    ]) {
      await mediaFlows(p, other.id, `video from ${other.label}`, (x) => x.chat === 'open');
    }
    await sendChat(carol, 'Hi both, Carol here.');
    await gotChat(alice, carol, 'Hi both, Carol here.');
    await gotChat(bob, carol, 'Hi both, Carol here.');
    await sendChat(alice, 'Welcome, Carol!');
    await gotChat(bob, alice, 'Welcome, Carol!');
    await gotChat(carol, alice, 'Welcome, Carol!');
    await shot(carol, '7-three-carol');
    await shot(alice, '7-three-alice');
    return { carol: carol.id };
  });

  if (run.pageErrors.length > 0) throw new Failure(`uncaught errors in the pages: ${run.pageErrors.join(' | ')}`);
  const relays = {};
  for (const p of everyone) relays[p.label] = { id: p.id, peers: await peersOf(p) };
  console.log(
    JSON.stringify({
      ok: true,
      room,
      ids: Object.fromEntries(everyone.map((p) => [p.label, p.id])),
      chat,
      stats,
      file,
      cancel,
      screen,
      devices,
      blip,
      refresh,
      three,
      relays,
      steps,
      totalMs: elapsed(),
    }),
  );
}

await run.finish('the whole walk', OVERALL_MS, main, {
  consoleTail: 200,
  onFailure: async () => {
    console.error(`steps done: ${JSON.stringify(steps)}`);
    for (const p of everyone) if (!p.page.isClosed()) await within(10_000, `${p.label}: diagnostics`, dumpPage(p)).catch(() => {});
  },
  onEnd: () => {
    if (proxy) proxy.close();
    rmSync(fileDir, { recursive: true, force: true });
  },
});
