// The page's event log: every line goes to the console, prefixed
// "[turnpike]", and the last 300 are kept in `events` (the page state's
// `events`, read by the browser tests when a run fails).

export const events = [];

const KEPT = 300;

export function log(...args) {
  const line = args
    .map((a) => (a instanceof Error ? `${a.name}: ${a.message}` : typeof a === 'string' ? a : safeJson(a)))
    .join(' ');
  events.push(`${new Date().toISOString().slice(11, 23)} ${line}`);
  if (events.length > KEPT) events.splice(0, events.length - KEPT);
  console.log('[turnpike]', line);
}

function safeJson(value) {
  try {
    return JSON.stringify(value);
  } catch {
    return String(value);
  }
}

// "Name: message" of an error, a DOMException or anything thrown.
export function describeError(e) {
  if (!e) return 'unknown error';
  return e.message ? `${e.name || 'Error'}: ${e.message}` : String(e.name || e);
}
