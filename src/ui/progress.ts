// Renders the core's ProgressEvents on stderr: an ora spinner (with a bar when the total is known)
// on a terminal, JSON lines under --json when stderr is not a terminal, and nothing otherwise.
// Warnings always come out as lines. The core never sees any of this: it only calls a ProgressFn.

import type { Ora } from 'ora';
import type { ChalkInstance } from 'chalk';
import type { ProgressEvent, ProgressFn } from '../core/progress.js';
import { colorsFor, displayWidth, formatBytes, formatClock, formatCount, formatRate } from './format.js';

export interface ProgressOptions {
  /** --json was given: JSON lines instead of nothing when the stream is not a terminal. */
  json: boolean;
  /** Show no progress at all (warnings still go out). */
  quiet: boolean;
  /** Where to draw; normally process.stderr. */
  stream: NodeJS.WriteStream;
  /** Spinner/bar refresh period on a terminal, ms (default 100: at most 10 updates a second). */
  intervalMs?: number;
  /** Minimum period between JSON progress lines, ms (default 1000; done events always go out). */
  jsonIntervalMs?: number;
  /** Clock, for tests. */
  now?: () => number;
  /** Environment for colour decisions, for tests. */
  env?: NodeJS.ProcessEnv;
}

export interface Progress {
  /** Feed events from the core here. */
  update: ProgressFn;
  /** A warning line (unreadable file, retried request...): always shown, also with quiet. */
  warn(message: string): void;
  /** Print a whole line to the stream without tearing the spinner (used by the logger). */
  line(text: string): void;
  /** Stop drawing and clear the spinner line; idempotent. */
  stop(): void;
  /** Which renderer was chosen. */
  readonly mode: 'tty' | 'json' | 'none';
}

interface PhaseState {
  phase: string;
  start: number;
  ev: ProgressEvent;
  /** (time, bytesDone) samples for the rate over the last few seconds. */
  samples: Array<[number, number]>;
}

const RATE_WINDOW_MS = 5000;
const BAR_WIDTH = 20;
const FRAMES = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/** Control characters in names would break the one-line display: show them as '?'. */
function printable(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/[\u0000-\u001f\u007f-\u009f]/g, '?');
}

/** Keep the end of a path, which is the informative part: "…/deep/dir/file.txt". */
function truncateLeft(s: string, width: number): string {
  if (width <= 1) return '';
  if (displayWidth(s) <= width) return s;
  const chars = [...s];
  let out = '';
  for (let i = chars.length - 1; i >= 0; i--) {
    const next = chars[i] + out;
    if (displayWidth(next) > width - 1) break;
    out = next;
  }
  return '…' + out;
}

function rateOf(st: PhaseState, now: number): number | undefined {
  const s = st.samples;
  if (s.length >= 2) {
    const [t0, b0] = s[0]!;
    const [t1, b1] = s[s.length - 1]!;
    if (t1 - t0 >= 500) return ((b1 - b0) * 1000) / (t1 - t0);
  }
  const elapsed = now - st.start;
  if (elapsed >= 500 && st.ev.bytesDone !== undefined) return (st.ev.bytesDone * 1000) / elapsed;
  return undefined;
}

function etaMs(st: PhaseState, rate: number | undefined): number | undefined {
  const { bytesDone, bytesTotal } = st.ev;
  if (bytesTotal === undefined || bytesDone === undefined || !rate || rate <= 0) return undefined;
  return (Math.max(0, bytesTotal - bytesDone) * 1000) / rate;
}

/** Summary text for a phase, shared by the spinner line and the persisted "done" line. */
export function describeProgress(
  st: { phase: string; start: number; ev: ProgressEvent },
  now: number,
  rate: number | undefined,
  c?: ChalkInstance,
  withBar = true,
): string {
  const ev = st.ev;
  const parts: string[] = [c ? c.bold(st.phase) : st.phase];
  const hasTotal = ev.bytesTotal !== undefined && ev.bytesTotal > 0;
  if (hasTotal && withBar && !ev.done) {
    const frac = Math.min(1, Math.max(0, (ev.bytesDone ?? 0) / ev.bytesTotal!));
    const full = Math.round(frac * BAR_WIDTH);
    const bar = '='.repeat(Math.max(0, full - 1)) + (full > 0 ? (full === BAR_WIDTH ? '=' : '>') : '') + ' '.repeat(BAR_WIDTH - full);
    parts.push(`[${c ? c.cyan(bar) : bar}] ${(frac * 100).toFixed(1).padStart(5)}%`);
  }
  if (ev.bytesDone !== undefined) {
    parts.push(hasTotal ? `${formatBytes(ev.bytesDone)} / ${formatBytes(ev.bytesTotal!)}` : formatBytes(ev.bytesDone));
  }
  if (ev.filesDone !== undefined) {
    const files = ev.filesTotal !== undefined ? `${formatCount(ev.filesDone)} / ${formatCount(ev.filesTotal)}` : formatCount(ev.filesDone);
    parts.push(`${files} files`);
  }
  if (ev.counters) {
    for (const [k, v] of Object.entries(ev.counters)) parts.push(`${formatCount(v)} ${k}`);
  }
  if (rate !== undefined && ev.bytesDone !== undefined) parts.push(formatRate(rate));
  parts.push(formatClock(now - st.start));
  if (!ev.done) {
    const eta = etaMs(st as PhaseState, rate);
    if (eta !== undefined) parts.push(`ETA ${formatClock(eta)}`);
  }
  return parts.join('  ');
}

export function createProgress(opts: ProgressOptions): Progress {
  const stream = opts.stream;
  const now = opts.now ?? Date.now;
  const env = opts.env ?? process.env;
  const isTTY = Boolean(stream.isTTY) && env.TERM !== 'dumb';
  const mode: Progress['mode'] = opts.quiet ? 'none' : isTTY ? 'tty' : opts.json ? 'json' : 'none';
  const c = colorsFor(stream, env);
  const intervalMs = Math.max(100, opts.intervalMs ?? 100);
  const jsonIntervalMs = opts.jsonIntervalMs ?? 1000;

  let state: PhaseState | undefined;
  let spinner: Ora | undefined;
  let timer: NodeJS.Timeout | undefined;
  let dirty = false;
  let lastJson = -Infinity;
  let stopped = false;
  // ora is loaded only when a terminal will show it: scripts and Kanister pods start faster.
  let makeOra: (typeof import('ora'))['default'] | undefined;
  if (mode === 'tty') {
    void import('ora').then((m) => {
      makeOra = m.default;
      if (state && !stopped) {
        dirty = true;
        ensureSpinner();
      }
    });
  }

  const writeLine = (text: string) => {
    if (spinner?.isSpinning) {
      spinner.clear();
      stream.write(text + '\n');
      spinner.render();
    } else {
      stream.write(text + '\n');
    }
  };

  const jsonLine = (obj: Record<string, unknown>) => {
    stream.write(JSON.stringify(obj) + '\n');
  };

  const spinnerText = (): string => {
    if (!state) return '';
    const t = now();
    const base = describeProgress(state, t, rateOf(state, t), c);
    const columns = stream.columns && stream.columns > 20 ? stream.columns : 80;
    const room = columns - 3 - displayWidth(base) - 2;
    const item = state.ev.item ? truncateLeft(printable(state.ev.item), room) : '';
    if (room < 10 || !item) return base;
    return `${base}  ${c.dim(item)}`;
  };

  const refresh = () => {
    if (!spinner || !dirty) return;
    dirty = false;
    spinner.text = spinnerText();
  };

  const ensureSpinner = () => {
    if (spinner?.isSpinning || !makeOra) return;
    spinner = makeOra({
      stream,
      isEnabled: true,
      discardStdin: false,
      hideCursor: false,
      color: c.level > 0 ? 'cyan' : false,
      spinner: { interval: intervalMs, frames: FRAMES },
      text: spinnerText(),
    }).start();
    if (!timer) {
      timer = setInterval(refresh, intervalMs);
      timer.unref();
    }
  };

  const finishPhase = () => {
    if (!state) return;
    const t = now();
    if (mode === 'tty' && spinner) {
      const text = describeProgress(state, t, rateOf(state, t), c, false);
      spinner.stopAndPersist({ symbol: c.green('✔'), text });
      spinner = undefined;
    }
    state = undefined;
  };

  const emitJson = (st: PhaseState, t: number) => {
    const ev = st.ev;
    const rate = rateOf(st, t);
    const eta = etaMs(st, rate);
    const obj: Record<string, unknown> = { type: 'progress', phase: st.phase, elapsedMs: t - st.start };
    if (ev.item !== undefined) obj.item = ev.item;
    for (const k of ['bytesDone', 'bytesTotal', 'filesDone', 'filesTotal'] as const) if (ev[k] !== undefined) obj[k] = ev[k];
    if (ev.bytesTotal && ev.bytesDone !== undefined) obj.percent = Math.min(100, Math.round((ev.bytesDone / ev.bytesTotal) * 1000) / 10);
    if (rate !== undefined) obj.bytesPerSecond = Math.round(rate);
    if (eta !== undefined && !ev.done) obj.etaSeconds = Math.round(eta / 1000);
    if (ev.counters) obj.counters = ev.counters;
    if (ev.done) obj.done = true;
    jsonLine(obj);
  };

  const warn = (message: string, phase?: string) => {
    if (opts.json && !isTTY) {
      jsonLine({ type: 'warning', ...(phase ? { phase } : {}), message });
    } else {
      writeLine(`${c.yellow('warning:')} ${printable(message)}`);
    }
  };

  const update: ProgressFn = (ev) => {
    if (stopped) return;
    if (ev.warning) warn(ev.warning, ev.phase);
    const hasData =
      ev.done || ev.bytesDone !== undefined || ev.filesDone !== undefined || ev.bytesTotal !== undefined || ev.item !== undefined || ev.counters !== undefined;
    if (!hasData || mode === 'none') return;
    const t = now();
    if (!state || state.phase !== ev.phase) {
      if (state) finishPhase();
      state = { phase: ev.phase, start: t, ev: {} as ProgressEvent, samples: [] };
      lastJson = -Infinity;
    }
    // Merge: a phase's events may carry only the fields that changed.
    state.ev = { ...state.ev, ...ev, warning: undefined };
    if (ev.bytesDone !== undefined) {
      state.samples.push([t, ev.bytesDone]);
      while (state.samples.length > 2 && t - state.samples[0]![0] > RATE_WINDOW_MS) state.samples.shift();
    }
    if (mode === 'json') {
      if (ev.done || t - lastJson >= jsonIntervalMs) {
        lastJson = t;
        emitJson(state, t);
      }
      if (ev.done) state = undefined;
      return;
    }
    // tty
    if (ev.done) {
      finishPhase();
      return;
    }
    dirty = true;
    ensureSpinner();
  };

  const stop = () => {
    if (stopped) return;
    stopped = true;
    if (timer) clearInterval(timer);
    timer = undefined;
    if (spinner?.isSpinning) spinner.stop();
    spinner = undefined;
    state = undefined;
  };

  return {
    update,
    warn: (m) => warn(m),
    line: (text) => writeLine(text),
    stop,
    mode,
  };
}
