// Chromium's TURN client and 300 Try Alternate: a page gathers relay
// candidates relay-only from the one TURN server it is given, which is
// full and names a sibling in ALTERNATE-SERVER; the candidates it prints
// show where Chromium got its relay. Run by tests/fleet/alternate_server.rs:
//   node alternate.mjs <page-url> <turn-url> <username> <credential>
// Prints one JSON line: {"relays": ["ip:port", ...], "state": "..."}.

import { chromium } from 'playwright-core';

import { CHROMIUM_ARGS, Failure, within } from './harness.mjs';

const [pageUrl, turnUrl, username, credential] = process.argv.slice(2);
if (!credential) {
  console.error('usage: node alternate.mjs <page-url> <turn-url> <username> <credential>');
  process.exit(2);
}

let code = 0;
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: CHROMIUM_ARGS });
try {
  const page = await browser.newPage();
  await page.goto(pageUrl, { waitUntil: 'load' });
  const gathered = await within(
    20_000,
    'relay candidate gathering',
    page.evaluate(
      async ({ turnUrl, username, credential }) => {
        const pc = new RTCPeerConnection({
          iceServers: [{ urls: turnUrl, username, credential }],
          iceTransportPolicy: 'relay',
        });
        const relays = [];
        const done = new Promise((resolve) => {
          pc.onicecandidate = (e) => {
            if (!e.candidate) return resolve();
            if (e.candidate.type === 'relay') relays.push(`${e.candidate.address}:${e.candidate.port}`);
          };
        });
        const errors = [];
        pc.onicecandidateerror = (e) => errors.push(`${e.url} ${e.errorCode} ${e.errorText}`);
        pc.createDataChannel('probe');
        await pc.setLocalDescription(await pc.createOffer());
        await done;
        const state = pc.iceGatheringState;
        pc.close();
        return { relays, errors, state };
      },
      { turnUrl, username, credential },
    ),
  );
  console.log(JSON.stringify(gathered));
  if (gathered.relays.length === 0) throw new Failure(`no relay candidate: ${JSON.stringify(gathered)}`);
} catch (e) {
  code = 1;
  console.error(`FAIL: ${e instanceof Failure ? e.message : e.stack || e}`);
} finally {
  await within(15_000, 'closing the browser', browser.close()).catch((e) => console.error(e.message));
}
process.exit(code);
