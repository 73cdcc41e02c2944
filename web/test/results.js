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
