// The TURN test page (/test) in headless Chromium, case after case:
//
//   node tests/browser/turn_test.mjs <page-base-url> <label> <artifacts-dir> --cases=<file.json>
//
// The cases file (written by tests/interop/browser_turn_test.rs) is
//   {"trust": [<certificate PEM>, ...],
//    "cases": [{"name": …, "source": "server", "apiKey": …}
//              | {"name": …, "source": "typed", "urls": [...], "username": …, "credential": …}]}
// Chromium trusts exactly the certificates of `trust` (by their public
// key: --ignore-certificate-errors-spki-list, and not
// --ignore-certificate-errors), so that a TLS server whose certificate is
// not among them is refused as a browser refuses an untrusted one. Each
// case opens the page afresh, fills the form as a person would, runs the
// test and reads the results from the page's JSON export; a screenshot of
// each goes to the artifacts dir. The script judges no verdict (the test
// does); it fails only if a case gives no results, or on a CSP violation
// or page error. One JSON summary line on stdout.

import { createHash, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { chromium } from 'playwright-core';

import { CHROMIUM_ARGS, Failure, Run } from './harness.mjs';

const OVERALL_MS = 240_000;
const CASE_MS = 90_000;

const run = new Run('turn_test.mjs');
const { baseUrl, artifacts, options } = run;
if (!options.cases) {
  console.error('turn_test.mjs needs --cases=<file.json>');
  process.exit(2);
}
const plan = JSON.parse(readFileSync(options.cases, 'utf8'));
const summary = { ok: false, cases: {} };

/** The base64 SHA-256 of a certificate's SubjectPublicKeyInfo, as Chromium's flag wants it. */
function spki(pem) {
  const der = new X509Certificate(pem).publicKey.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(der).digest('base64');
}

async function runCase(context, index, c) {
  const page = await context.newPage();
  page.setDefaultTimeout(10_000);
  page.on('console', (msg) => run.consoleLines.push(`[${c.name} +${run.elapsed()}ms] ${msg.type()}: ${msg.text()}`));
  page.on('pageerror', (err) => run.pageErrors.push(`[${c.name}] ${err.message}`));
  await page.goto(new URL('/test', baseUrl).toString(), { waitUntil: 'load' });
  if (c.source === 'server') {
    await page.fill('#api-key', c.apiKey);
  } else {
    await page.check('input[name="source"][value="typed"]');
    await page.fill('#urls', c.urls.join('\n'));
    await page.fill('#username', c.username);
    await page.fill('#credential', c.credential);
  }
  await page.click('#run');
  await page
    .waitForFunction(
      () => !document.getElementById('json').hidden || !document.getElementById('form-error').hidden,
      null,
      { timeout: CASE_MS, polling: 200 },
    )
    .catch(() => {});
  await page.screenshot({ path: `${artifacts}/${index + 1}-${c.name}.png`, fullPage: true });
  const error = await page.evaluate(() => {
    const e = document.getElementById('form-error');
    return e.hidden ? null : e.textContent;
  });
  if (error) throw new Failure(`${c.name}: the page refused the test: ${error}`);
  const json = await page.textContent('#json');
  if (!json) throw new Failure(`${c.name}: no results within ${CASE_MS} ms (status "${await page.textContent('#status')}")`);
  const exported = JSON.parse(json);
  // What the table shows, row by row, as a person reads it.
  const table = await page.evaluate(() =>
    [...document.querySelectorAll('#results tr:not(.reason)')].map((tr) => ({
      transport: tr.dataset.transport,
      verdict: tr.dataset.verdict,
      cells: [...tr.cells].map((td) => td.textContent),
    })),
  );
  // With the server's own credentials, the server's own check too.
  const server = await page.evaluate(() => {
    const panel = document.getElementById('server-panel');
    if (panel.hidden) return null;
    return {
      verdict: document.getElementById('server-summary').dataset.verdict ?? null,
      summary: document.getElementById('server-summary').textContent,
      checks: [...document.querySelectorAll('#server-checks tr')].map((tr) => ({
        url: tr.cells[0].textContent,
        check: tr.dataset.check,
        verdict: tr.dataset.verdict,
        detail: tr.cells[3].textContent,
      })),
    };
  });
  await page.close();
  return { results: exported.results, table, server };
}

async function main() {
  const trusted = plan.trust.map(spki);
  const args = [
    ...CHROMIUM_ARGS.filter((a) => a !== '--ignore-certificate-errors'),
    `--ignore-certificate-errors-spki-list=${trusted.join(',')}`,
  ];
  run.browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args });
  const context = await run.browser.newContext({ viewport: { width: 1300, height: 900 } });
  for (const [index, c] of plan.cases.entries()) {
    summary.cases[c.name] = await runCase(context, index, c);
  }
  const csp = run.consoleLines.filter((l) => /Content Security Policy|Refused to/.test(l));
  if (csp.length || run.pageErrors.length) {
    throw new Failure(`CSP violations or page errors: ${JSON.stringify([...csp, ...run.pageErrors])}`);
  }
  summary.ok = true;
  console.log(JSON.stringify(summary));
}

await run.finish('the TURN test page', OVERALL_MS, main, {
  onFailure: async () => console.log(JSON.stringify(summary)),
});
