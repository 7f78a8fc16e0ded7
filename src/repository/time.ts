// Timestamps for files dmctl writes itself (key files, locks): RFC3339 with the local UTC offset.
export function localTimestamp(d = new Date()): string {
  const off = -d.getTimezoneOffset();
  const local = new Date(d.getTime() + off * 60000).toISOString().replace(/Z$/, '');
  if (off === 0) return `${local}Z`;
  const sign = off > 0 ? '+' : '-';
  const a = Math.abs(off);
  return `${local}${sign}${String(Math.floor(a / 60)).padStart(2, '0')}:${String(a % 60).padStart(2, '0')}`;
}
