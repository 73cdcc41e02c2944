// The results of the TURN test page: one row per URL (verdict, relayed
// address, round trip, throughput, loss, or the reason it failed), and
// the same as JSON for export. Text only (`textContent`): a URL or a
// server's error text is never parsed as HTML.

const MBIT = 1_000_000;

function cell(text, className = '') {
  const td = document.createElement('td');
  td.textContent = text;
  td.className = className;
  return td;
}

/** Draws `results` into the table. */
export function renderResults(results) {
  const rows = results.map((r) => {
    const tr = document.createElement('tr');
    tr.dataset.transport = r.transport;
    tr.dataset.verdict = r.verdict;
    tr.className = `verdict-${r.verdict}`;
    const verdict = { pass: 'Pass', fail: 'Fail', pending: 'Waiting', running: 'Testing…' }[r.verdict] ?? r.verdict;
    tr.append(
      cell(r.transport.toUpperCase()),
      cell(r.url, 'mono'),
      cell(verdict, 'verdict'),
      cell(r.relay ?? '–', 'mono'),
      cell(r.rttMs == null ? '–' : `${r.rttMs} ms`, 'num'),
      cell(r.throughputBps == null ? '–' : `${(r.throughputBps / MBIT).toFixed(1)} Mbit/s`, 'num'),
      cell(r.lossPercent == null ? '–' : `${r.lossPercent} %`, 'num'),
    );
    if (!r.reason) return [tr];
    const why = document.createElement('tr');
    why.className = 'reason';
    why.dataset.transport = r.transport;
    const td = cell(r.reason);
    td.colSpan = 7;
    why.append(td);
    return [tr, why];
  });
  document.getElementById('results').replaceChildren(...rows.flat());
}

/** Draws `turnpike selftest`'s report of the server checking itself. */
export function renderServerChecks(report) {
  const rows = report.checks.map((c) => {
    const tr = document.createElement('tr');
    tr.dataset.check = c.check;
    tr.dataset.verdict = c.verdict;
    tr.className = `verdict-${c.verdict}`;
    tr.append(cell(c.url, 'mono'), cell(c.check), cell(c.verdict.toUpperCase(), 'verdict'), cell(c.detail));
    return tr;
  });
  document.getElementById('server-checks').replaceChildren(...rows);
  const { pass, warn, fail, skip } = report.counts;
  const summary = document.getElementById('server-summary');
  summary.textContent = `${report.verdict.toUpperCase()}: ${pass} passed, ${warn} warned, ${fail} failed, ${skip} skipped`;
  summary.dataset.verdict = report.verdict;
}

/** The results as a JSON document. */
export function exportJson(results) {
  return JSON.stringify(
    {
      tested: new Date().toISOString(),
      userAgent: navigator.userAgent,
      results: results.map(({ url, transport, host, port, verdict, reason, relay, gatherMs, rttMs, throughputBps, lossPercent, errors }) => ({
        url,
        transport,
        host,
        port,
        verdict,
        reason,
        relay,
        gatherMs,
        rttMs,
        throughputBps,
        lossPercent,
        errors,
      })),
    },
    null,
    2,
  );
}
