// What the browser scripts (call.mjs, features.mjs) share: their command
// line, Chromium's launch flags, bounded waits, a page per participant
// with its console kept, joining a room on the demo page, and the run
// itself (a hard stop, the console on failure, the browser closed).

import { mkdirSync } from 'node:fs';

export class Failure extends Error {}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Rejects with `what` if `promise` has not settled within `ms`. */
export function within(ms, what, promise) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Failure(`${what}: no result within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Flags for Debian's Chromium, headless, with fake camera and microphone. */
export const CHROMIUM_ARGS = [
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection',
  '--ignore-certificate-errors',
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** One script's run: `node <script> <base-url> <room> <artifacts-dir> [<second-base-url>] [--name=value ...]`;
 * the second URL, when given, is another instance of a fleet for the
 * second participant (`secondUrl`, else the first); the `--name=value`
 * arguments are the script's own (`options`). */
export class Run {
  constructor(script) {
    const args = process.argv.slice(2);
    const options = {};
    for (const arg of args.filter((a) => a.startsWith('--'))) {
      const [name, ...value] = arg.slice(2).split('=');
      options[name] = value.join('=');
    }
    const [baseUrl, room, artifacts, second] = args.filter((a) => !a.startsWith('--'));
    if (!baseUrl || !room || !artifacts) {
      console.error(`usage: node ${script} <base-url> <room> <artifacts-dir> [<second-base-url>] [--name=value ...]`);
      process.exit(2);
    }
    mkdirSync(artifacts, { recursive: true });
    Object.assign(this, { baseUrl, room, artifacts, secondUrl: second || baseUrl, options });
    this.started = Date.now();
    this.consoleLines = [];
    this.pageErrors = [];
    this.browser = null;
  }

  elapsed() {
    return Date.now() - this.started;
  }

  /** A fresh browser context on the demo page (at `base`, in this run's room). */
  async openParticipant(label, base, viewport) {
    const context = await this.browser.newContext({ viewport, permissions: ['camera', 'microphone'] });
    const page = await context.newPage();
    page.setDefaultTimeout(10_000);
    page.on('console', (msg) => this.consoleLines.push(`[${label} +${this.elapsed()}ms] ${msg.type()}: ${msg.text()}`));
    page.on('pageerror', (err) => this.pageErrors.push(`[${label}] ${err.message}`));
    const url = new URL(base);
    url.searchParams.set('room', this.room);
    await page.goto(url.toString(), { waitUntil: 'load' });
    return { label, context, page };
  }

  /** Joins this run's room relay-only as `name`; fails if the page does not
   * say it joined within `ms`. */
  async joinRoom(p, name, ms) {
    const { page } = p;
    await page.fill('#name', name);
    await page.fill('#room', this.room);
    await page.check('#relay-only');
    await page.click('#join');
    // Joined, or refused (the page then shows why under the form).
    await page
      .waitForFunction(
        () =>
          /Joined room/.test(document.getElementById('status')?.textContent || '') ||
          !document.getElementById('form-error')?.hidden,
        null,
        { timeout: ms },
      )
      .catch(() => {});
    const status = await page.textContent('#status').catch(() => '?');
    if (!/Joined room/.test(status || '')) {
      const error = await page.textContent('#form-error').catch(() => '?');
      throw new Failure(`${p.label} did not join (status "${status}", form error "${error}")`);
    }
  }

  /** Runs `main` within `overallMs`, then exits: 0 on success, 1 with the
   * reason (and the browser console) on stderr. `onFailure` adds
   * diagnostics, `onEnd` releases what the script holds besides the browser. */
  async finish(what, overallMs, main, { onFailure = async () => {}, onEnd = () => {}, consoleTail = 150 } = {}) {
    let code = 0;
    const hardStop = setTimeout(() => {
      console.error(`FAIL: still running after ${overallMs + 20_000} ms; exiting`);
      process.exit(4);
    }, overallMs + 20_000);
    hardStop.unref();
    try {
      await within(overallMs, what, main());
    } catch (e) {
      code = 1;
      console.error(`FAIL: ${e instanceof Failure ? e.message : e.stack || e}`);
      await onFailure();
    } finally {
      if (code !== 0 || process.env.TURNPIKE_BROWSER_VERBOSE) {
        console.error(`---- browser console (${this.consoleLines.length} lines) ----`);
        console.error(this.consoleLines.slice(-consoleTail).join('\n'));
      }
      if (this.browser) await within(15_000, 'closing the browser', this.browser.close()).catch((e) => console.error(e.message));
      onEnd();
    }
    process.exit(code);
  }
}
