// How the console writes numbers: rates with SI prefixes, byte counts in
// binary units, ages in the two largest units.

const SI = ['', 'k', 'M', 'G', 'T'];

/** `value` with an SI prefix and `unit` ("12.5 Mbit/s"); "–" for none. */
export function si(value, unit = '') {
  if (value === null || value === undefined || Number.isNaN(value)) return '–';
  let v = Math.abs(value);
  let i = 0;
  while (v >= 1000 && i < SI.length - 1) {
    v /= 1000;
    i += 1;
  }
  const digits = v >= 100 || (i === 0 && Number.isInteger(v)) ? 0 : v >= 10 ? 1 : 2;
  const sign = value < 0 ? '-' : '';
  const space = unit || SI[i] ? ' ' : '';
  return `${sign}${v.toFixed(digits)}${space}${SI[i]}${unit}`;
}

/** A number as a chart's unit wants it. */
export function ofUnit(value, unit) {
  if (unit === 'bit/s') return si(value, 'bit/s');
  if (unit === '/s') return si(value, '/s');
  return si(value);
}

/** A byte count ("3.2 MiB"). */
export function bytes(n) {
  if (!Number.isFinite(n)) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${i === 0 ? v : v.toFixed(v >= 100 ? 0 : 1)} ${units[i]}`;
}

/** Seconds as "2h 05m", "4m 10s", "12s". */
export function age(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  if (s >= 86400) return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
  if (s >= 3600) return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  if (s >= 60) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, '0')}s`;
  return `${s}s`;
}

/** A label of the API ("to_peer", "refused_486") for people. */
export function label(text) {
  return text.replaceAll('_', ' ');
}
