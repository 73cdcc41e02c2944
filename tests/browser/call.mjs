// A two-party call through turnpike's demo page in headless Chromium.
//
//   node tests/browser/call.mjs <base-url> <room> <artifacts-dir> [<bob-base-url>]
//
// With a second URL, bob's page is opened on that instance of a fleet
// (rooms shared through Redis) while alice's uses the first.
// Opens the page in two fresh browser contexts (alice, then bob), joins the
// same room with "relay only" on, and waits until on both sides the remote
// video is being decoded (framesDecoded grows) and the selected ICE
// candidate pair is relay <-> relay, as pc.getStats() reports it and as the
// page's badge shows it (with the page's URL, its signaling URL and the
// ICE server URLs its peer connection was given). Saves screenshots, closes bob, and checks that
// alice's page drops bob's tile. Prints one JSON summary line on stdout;
// exits 0 on success, 1 with a reason on stderr otherwise. Every wait is
// bounded, and the whole run is limited to OVERALL_MS.

import { join } from 'node:path';
import { chromium } from 'playwright-core';

import { CHROMIUM_ARGS, Failure, Run, sleep, within } from './harness.mjs';

const OVERALL_MS = 90_000;
const JOIN_MS = 15_000;
const MEDIA_MS = 30_000;
const LEAVE_MS = 10_000;
const POLL_MS = 1_000;

const run = new Run('call.mjs');
const { room, artifacts } = run;
const elapsed = () => run.elapsed();

async function openParticipant(label, base) {
  const p = await run.openParticipant(label, base, { width: 1280, height: 800 });
  return { ...p, samples: [], last: null };
}

/** What pc.getStats() says about each remote peer of a page, read directly. */
function readStats(page) {
  return page.evaluate(async () => {
    const demo = window.turnpikeDemo;
    const out = [];
    for (const [id, peer] of demo.peers) {
      const report = await peer.pc.getStats();
      let pair = null;
      report.forEach((s) => {
        if (!pair && s.type === 'transport' && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId);
      });
      if (!pair) {
        report.forEach((s) => {
          if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s;
        });
      }
      const local = pair ? report.get(pair.localCandidateId) : null;
      const remote = pair ? report.get(pair.remoteCandidateId) : null;
      let framesDecoded = 0;
      report.forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'video') framesDecoded += s.framesDecoded || 0;
      });
      const tile = document.querySelector(`[data-peer-id="${CSS.escape(id)}"]`);
      out.push({
        id,
        name: peer.name,
        iceState: peer.pc.iceConnectionState,
        framesDecoded,
        localType: local ? local.candidateType : null,
        remoteType: remote ? remote.candidateType : null,
        relayProtocol: local ? local.relayProtocol || null : null,
        localAddress: local ? `${local.address}:${local.port}` : null,
        remoteAddress: remote ? `${remote.address}:${remote.port}` : null,
        badge: tile ? tile.querySelector('.badge')?.textContent || '' : null,
        iceUrls: (peer.pc.getConfiguration().iceServers || []).flatMap((s) => [].concat(s.urls)),
      });
    }
    return { myId: demo.myId, pageUrl: location.href, wsUrl: demo.ws ? demo.ws.url : null, peers: out };
  });
}

/** True once the page has one peer whose video decodes over relay <-> relay. */
function callIsUp(p) {
  const { samples, last } = p;
  if (!last || last.peers.length !== 1) return false;
  const peer = last.peers[0];
  const frames = samples.map((s) => s.framesDecoded);
  const grew = frames.length >= 2 && frames[frames.length - 1] > frames[frames.length - 2] && frames[frames.length - 2] > 0;
  return grew && peer.localType === 'relay' && peer.remoteType === 'relay' && /relay/.test(peer.badge || '');
}

async function dumpPage(p) {
  try {
    const events = await p.page.evaluate(() => window.turnpikeDemo.events.slice(-60));
    console.error(`---- ${p.label}: page events ----\n${events.join('\n')}`);
  } catch (e) {
    console.error(`(${p.label}: page events unavailable: ${e.message})`);
  }
  if (p.last) console.error(`---- ${p.label}: last stats ----\n${JSON.stringify(p.last)}`);
  await p.page.screenshot({ path: join(artifacts, `failed-${p.label}.png`) }).catch(() => {});
}

async function main() {
  run.browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: CHROMIUM_ARGS,
    timeout: 30_000,
  });
  const alice = await openParticipant('alice', run.baseUrl);
  const bob = await openParticipant('bob', run.secondUrl);
  const everyone = [alice, bob];
  try {
    // Alice first, so that bob is the newcomer who makes the offer.
    await run.joinRoom(alice, 'Alice', JOIN_MS);
    await run.joinRoom(bob, 'Bob', JOIN_MS);

    const deadline = Date.now() + MEDIA_MS;
    for (;;) {
      for (const p of everyone) {
        p.last = await within(5_000, `${p.label}: getStats`, readStats(p.page));
        if (p.last.peers.length === 1) p.samples.push({ t: elapsed(), framesDecoded: p.last.peers[0].framesDecoded });
      }
      if (everyone.every(callIsUp)) break;
      if (Date.now() > deadline) {
        const why = everyone
          .map((p) => `${p.label}: ${JSON.stringify(p.last && p.last.peers)} frames ${p.samples.map((s) => s.framesDecoded).join(',')}`)
          .join('; ');
        throw new Failure(`no relay <-> relay call with decoded video on both pages within ${MEDIA_MS} ms (${why})`);
      }
      await sleep(POLL_MS);
    }
    const callUpMs = elapsed();
    for (const p of everyone) await p.page.screenshot({ path: join(artifacts, `call-${p.label}.png`) });

    // Bob goes away (browser context closed, as when a tab is closed): alice
    // must drop his tile once the server says peer-left.
    const bobId = bob.last.myId;
    const leftAt = Date.now();
    await bob.context.close();
    await alice.page
      .waitForFunction(
        (id) => !document.querySelector(`[data-peer-id="${CSS.escape(id)}"]`) && window.turnpikeDemo.peers.size === 0,
        bobId,
        { timeout: LEAVE_MS },
      )
      .catch(() => {
        throw new Failure(`alice still shows bob's tile ${LEAVE_MS} ms after bob closed his page`);
      });
    const leaveMs = Date.now() - leftAt;
    const status = await alice.page.textContent('#status');
    if (!/0 peers/.test(status || '')) throw new Failure(`alice's status after bob left is "${status}"`);
    await sleep(400); // let the "left the call" notice finish sliding in
    await alice.page.screenshot({ path: join(artifacts, 'after-leave.png') });

    if (run.pageErrors.length > 0) throw new Failure(`uncaught errors in the page: ${run.pageErrors.join(' | ')}`);

    const side = (p) => {
      const peer = p.last.peers[0];
      return {
        id: p.last.myId,
        pageUrl: p.last.pageUrl,
        wsUrl: p.last.wsUrl,
        iceUrls: peer.iceUrls,
        framesDecoded: p.samples.slice(-2).map((s) => s.framesDecoded),
        localType: peer.localType,
        remoteType: peer.remoteType,
        relayProtocol: peer.relayProtocol,
        localAddress: peer.localAddress,
        remoteAddress: peer.remoteAddress,
        badge: peer.badge,
      };
    };
    const summary = {
      ok: true,
      room,
      alice: side(alice),
      bob: side(bob),
      callUpMs,
      leaveMs,
      totalMs: elapsed(),
    };
    console.log(JSON.stringify(summary));
  } catch (e) {
    for (const p of everyone) if (!p.page.isClosed()) await within(10_000, `${p.label}: diagnostics`, dumpPage(p)).catch(() => {});
    throw e;
  }
}

await run.finish('the whole browser call', OVERALL_MS, main);
