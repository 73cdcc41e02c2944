// The TURN test page's entry module: where the URLs and credentials come
// from (this server's `/ice-servers` with its API key, or typed in), the
// run (one URL after another, UDP first, TLS last, so that a TLS failure
// can be told from the TCP result of the same host), the results table
// and the JSON export. Paths only, no host: the page tests other servers
// from wherever it is served.

import { describe, TestError, testUrl } from './probe.js';
import { renderResults, renderServerChecks, exportJson } from './results.js';

const $ = (id) => document.getElementById(id);
const ORDER = { udp: 0, tcp: 1, tls: 2 };

let results = [];
let running = false;

function setStatus(text, kind) {
  $('status').textContent = text;
  $('status').className = `status${kind ? ` is-${kind}` : ''}`;
}

function showError(message) {
  $('form-error').textContent = message;
  $('form-error').hidden = !message;
}

/** The tests to run: [{url, username, credential}], in transport order. */
async function plan() {
  const source = document.querySelector('input[name="source"]:checked').value;
  let tests = [];
  if (source === 'server') {
    const key = $('api-key').value.trim();
    const response = await fetch('/ice-servers', {
      headers: key ? { Authorization: `Bearer ${key}` } : {},
      cache: 'no-store',
      credentials: 'omit',
    }).catch((e) => {
      throw new TestError(`this server's /ice-servers is unreachable: ${e.message}`);
    });
    if (response.status === 404) throw new TestError('this server hands out no credentials (/ice-servers needs signaling.api_key): type them in');
    if (response.status === 401) throw new TestError('the API key was refused (401)');
    if (!response.ok) throw new TestError(`/ice-servers answered ${response.status}`);
    const { iceServers } = await response.json();
    for (const server of iceServers) {
      for (const url of [server.urls].flat()) {
        if (/^turns?:/i.test(url)) tests.push({ url, username: server.username, credential: server.credential });
      }
    }
    if (tests.length === 0) throw new TestError('/ice-servers lists no turn: or turns: URL');
  } else {
    const username = $('username').value;
    const credential = $('credential').value;
    const urls = $('urls').value.split('\n').map((u) => u.trim()).filter(Boolean);
    if (urls.length === 0) throw new TestError('give at least one TURN URL');
    tests = urls.map((url) => ({ url, username, credential }));
  }
  for (const t of tests) describe(t.url);
  const transport = (t) => ORDER[describe(t.url).transport];
  return tests.sort((x, y) => transport(x) - transport(y));
}

/** The same URLs checked by the server itself (`turnpike selftest`, run
 * by `/test/self-check` against its own `/ice-servers`): whether it
 * relays at all, beside what this browser saw. */
async function serverView() {
  const key = $('api-key').value.trim();
  setStatus('Asking the server to check itself…', 'connecting');
  const response = await fetch('/test/self-check', {
    headers: key ? { Authorization: `Bearer ${key}` } : {},
    cache: 'no-store',
    credentials: 'omit',
  }).catch(() => null);
  $('server-panel').hidden = false;
  if (!response || !response.ok) {
    $('server-summary').textContent = `the server's own check is unavailable (${response ? response.status : 'unreachable'})`;
    $('server-checks').replaceChildren();
    return;
  }
  renderServerChecks(await response.json());
}

async function run() {
  if (running) return;
  running = true;
  showError('');
  $('run').disabled = true;
  $('export').disabled = true;
  try {
    const tests = await plan();
    results = tests.map((t) => ({ url: describe(t.url).url, transport: describe(t.url).transport, verdict: 'pending' }));
    $('results-panel').hidden = false;
    renderResults(results);
    for (const [i, t] of tests.entries()) {
      setStatus(`Testing ${t.url} (${i + 1} of ${tests.length})…`, 'connecting');
      results[i] = { ...results[i], verdict: 'running' };
      renderResults(results);
      results[i] = await testUrl(t.url, t.username, t.credential, results.slice(0, i));
      renderResults(results);
    }
    if (document.querySelector('input[name="source"]:checked').value === 'server') await serverView();
    const passed = results.filter((r) => r.verdict === 'pass').length;
    setStatus(`Done: ${passed} of ${results.length} passed`, passed === results.length ? 'joined' : 'error');
    $('json').textContent = exportJson(results);
    $('json').hidden = false;
    $('export').disabled = false;
  } catch (e) {
    showError(e instanceof TestError ? e.message : `the test failed: ${e.message}`);
    setStatus('Ready');
  } finally {
    running = false;
    $('run').disabled = false;
  }
}

for (const radio of document.querySelectorAll('input[name="source"]')) {
  radio.addEventListener('change', () => {
    const typed = document.querySelector('input[name="source"]:checked').value === 'typed';
    $('typed').hidden = !typed;
    $('from-server').hidden = typed;
  });
}

$('test-form').addEventListener('submit', (event) => {
  event.preventDefault();
  run();
});

$('export').addEventListener('click', () => {
  const blob = new Blob([exportJson(results)], { type: 'application/json' });
  const link = document.createElement('a');
  link.href = URL.createObjectURL(blob);
  link.download = `turn-test-${new Date().toISOString().replaceAll(':', '-')}.json`;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
});
