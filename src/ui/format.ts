// Human formatting for the presentation layer: byte sizes, durations, rates, aligned tables and
// colours. No dependencies beyond chalk; everything here is pure except the colour-level probe,
// which reads the environment and the stream it is asked about.

import { Chalk, type ChalkInstance } from 'chalk';

const KIB = 1024;
const MIB = KIB * 1024;
const GIB = MIB * 1024;
const TIB = GIB * 1024;

/**
 * Bytes the way restic prints them: whole bytes below 1 KiB ("512 B"), otherwise three decimals
 * in the largest binary unit that is not larger than the value ("1.500 KiB", "3.000 GiB").
 */
export function formatBytes(n: number | bigint): string {
  const v = typeof n === 'bigint' ? Number(n) : n;
  if (!Number.isFinite(v)) return '? B';
  const sign = v < 0 ? '-' : '';
  const a = Math.abs(v);
  if (a >= TIB) return `${sign}${(a / TIB).toFixed(3)} TiB`;
  if (a >= GIB) return `${sign}${(a / GIB).toFixed(3)} GiB`;
  if (a >= MIB) return `${sign}${(a / MIB).toFixed(3)} MiB`;
  if (a >= KIB) return `${sign}${(a / KIB).toFixed(3)} KiB`;
  return `${sign}${Math.round(a)} B`;
}

/** A transfer rate: formatBytes of the bytes per second, followed by "/s". */
export function formatRate(bytesPerSecond: number): string {
  if (!Number.isFinite(bytesPerSecond) || bytesPerSecond < 0) return '? B/s';
  return `${formatBytes(bytesPerSecond)}/s`;
}

/**
 * A duration as a clock: "m:ss" below one hour, "h:mm:ss" from one hour on (restic's style).
 * Input in milliseconds; fractions of a second are truncated.
 */
export function formatClock(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '?:??';
  const total = Math.floor(ms / 1000);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  const ss = String(s).padStart(2, '0');
  if (h > 0) return `${h}:${String(m).padStart(2, '0')}:${ss}`;
  return `${m}:${ss}`;
}

/**
 * A duration for sentences and summaries: "850ms", "12.3s", "4m05s", "2h03m", "3d04h".
 * Input in milliseconds.
 */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '?';
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${(Math.floor(ms / 100) / 10).toFixed(1)}s`;
  const s = Math.floor(ms / 1000);
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  return `${Math.floor(s / 86400)}d${String(Math.floor((s % 86400) / 3600)).padStart(2, '0')}h`;
}

/** "42.5%" with one decimal; clamps to 0..100; "?" when the total is unknown or zero. */
export function formatPercent(done: number, total: number | undefined): string {
  if (!total || total <= 0 || !Number.isFinite(done)) return '?';
  const p = Math.min(100, Math.max(0, (done / total) * 100));
  return `${p.toFixed(1)}%`;
}

/** Thousands separators without locale surprises: 1234567 → "1,234,567". */
export function formatCount(n: number): string {
  if (!Number.isFinite(n)) return '?';
  const neg = n < 0;
  const s = String(Math.trunc(Math.abs(n)));
  const parts: string[] = [];
  for (let i = s.length; i > 0; i -= 3) parts.unshift(s.slice(Math.max(0, i - 3), i));
  return (neg ? '-' : '') + parts.join(',');
}

// ---------------------------------------------------------------------------------------------
// Tables

// CSI and OSC escape sequences, enough to measure strings chalk has coloured.
// eslint-disable-next-line no-control-regex
const ANSI_RE = /\u001b\[[0-9;?]*[ -/]*[@-~]|\u001b\][^\u0007\u001b]*(?:\u0007|\u001b\\)/g;

export function stripAnsi(s: string): string {
  return s.replace(ANSI_RE, '');
}

function isWide(cp: number): boolean {
  // East Asian wide/fullwidth ranges and common emoji: two terminal columns.
  return (
    (cp >= 0x1100 && cp <= 0x115f) ||
    (cp >= 0x2e80 && cp <= 0xa4cf && cp !== 0x303f) ||
    (cp >= 0xac00 && cp <= 0xd7a3) ||
    (cp >= 0xf900 && cp <= 0xfaff) ||
    (cp >= 0xfe30 && cp <= 0xfe4f) ||
    (cp >= 0xff00 && cp <= 0xff60) ||
    (cp >= 0xffe0 && cp <= 0xffe6) ||
    (cp >= 0x1f300 && cp <= 0x1f64f) ||
    (cp >= 0x1f900 && cp <= 0x1f9ff) ||
    (cp >= 0x20000 && cp <= 0x3fffd)
  );
}

/** Terminal columns a string occupies (ANSI escapes ignored, combining marks zero, CJK two). */
export function displayWidth(s: string): number {
  let w = 0;
  for (const ch of stripAnsi(s)) {
    const cp = ch.codePointAt(0)!;
    if (cp < 0x20 || (cp >= 0x7f && cp < 0xa0)) continue;
    if ((cp >= 0x300 && cp <= 0x36f) || cp === 0x200b || (cp >= 0xfe00 && cp <= 0xfe0f)) continue;
    w += isWide(cp) ? 2 : 1;
  }
  return w;
}

export interface TableColumn {
  header: string;
  /** Right-align numbers and sizes; default left. */
  align?: 'left' | 'right';
}

export interface TableOptions {
  /** Spaces between columns (default 2). */
  gap?: number;
  /** Draw a line of dashes under the header, like restic's tables (default true). */
  separator?: boolean;
  /** Leave out the header row entirely (default false). */
  noHeader?: boolean;
}

/**
 * Column-aligned text table. Cells are strings (already formatted, may carry colour); returns the
 * lines without trailing newline. Trailing spaces are trimmed from every line. Newlines and tabs in
 * cells are shown as "\n" / "\t" so one row stays one line.
 */
export function table(columns: TableColumn[], rows: string[][], opts: TableOptions = {}): string[] {
  const gap = ' '.repeat(opts.gap ?? 2);
  const clean = (c: string | undefined) => (c ?? '').replace(/\n/g, '\\n').replace(/\r/g, '\\r').replace(/\t/g, '\\t');
  const body = rows.map((r) => columns.map((_, i) => clean(r[i])));
  const head = columns.map((c) => clean(c.header));
  const widths = columns.map((_, i) =>
    Math.max(opts.noHeader ? 0 : displayWidth(head[i]!), ...body.map((r) => displayWidth(r[i]!))),
  );
  const render = (cells: string[]) =>
    cells
      .map((c, i) => {
        const pad = ' '.repeat(Math.max(0, widths[i]! - displayWidth(c)));
        return columns[i]!.align === 'right' ? pad + c : c + pad;
      })
      .join(gap)
      .replace(/\s+$/, '');
  const out: string[] = [];
  if (!opts.noHeader) {
    out.push(render(head));
    if (opts.separator ?? true) {
      const total = widths.reduce((a, b) => a + b, 0) + gap.length * Math.max(0, widths.length - 1);
      out.push('-'.repeat(total));
    }
  }
  for (const r of body) out.push(render(r));
  return out;
}

// ---------------------------------------------------------------------------------------------
// Colours

export type ColorLevel = 0 | 1 | 2 | 3;

interface StreamLike {
  isTTY?: boolean;
}

/**
 * How many colours to use on `stream`:
 * NO_COLOR set and non-empty ⇒ 0 (https://no-color.org); else FORCE_COLOR ⇒ its level
 * ("0"/"false" ⇒ 0, ""/"1"/"true" ⇒ 1, "2", "3"); else a non-TTY or TERM=dumb ⇒ 0; else 256
 * colours when TERM/COLORTERM say so, truecolor for COLORTERM=truecolor, basic 16 otherwise.
 */
export function colorLevel(stream: StreamLike | undefined, env: NodeJS.ProcessEnv = process.env): ColorLevel {
  if (env.NO_COLOR !== undefined && env.NO_COLOR !== '') return 0;
  const force = env.FORCE_COLOR;
  if (force !== undefined) {
    const f = force.trim().toLowerCase();
    if (f === '0' || f === 'false') return 0;
    if (f === '2') return 2;
    if (f === '3') return 3;
    return 1;
  }
  if (!stream?.isTTY) return 0;
  if (env.TERM === 'dumb') return 0;
  const ct = (env.COLORTERM ?? '').toLowerCase();
  if (ct === 'truecolor' || ct === '24bit') return 3;
  if (/-256(color)?$/i.test(env.TERM ?? '')) return 2;
  return 1;
}

/** A chalk instance for one stream (stdout and stderr can differ: `dmctl … 2>log`). */
export function colorsFor(stream: StreamLike | undefined, env: NodeJS.ProcessEnv = process.env): ChalkInstance {
  return new Chalk({ level: colorLevel(stream, env) });
}

let stdoutColors: ChalkInstance | undefined;
let stderrColors: ChalkInstance | undefined;

/** Colours for stdout, decided once per process. */
export function outColors(): ChalkInstance {
  return (stdoutColors ??= colorsFor(process.stdout));
}

/** Colours for stderr, decided once per process. */
export function errColors(): ChalkInstance {
  return (stderrColors ??= colorsFor(process.stderr));
}
