import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import {
  colorLevel,
  colorsFor,
  displayWidth,
  formatBytes,
  formatClock,
  formatCount,
  formatDuration,
  formatPercent,
  formatRate,
  stripAnsi,
  table,
} from '../../src/ui/format.js';
import { createProgress } from '../../src/ui/progress.js';
import { createLogger } from '../../src/ui/log.js';

test('formatBytes: restic style, binary units, three decimals', () => {
  assert.equal(formatBytes(0), '0 B');
  assert.equal(formatBytes(1023), '1023 B');
  assert.equal(formatBytes(1024), '1.000 KiB');
  assert.equal(formatBytes(1536), '1.500 KiB');
  assert.equal(formatBytes(5 * 1024 * 1024), '5.000 MiB');
  assert.equal(formatBytes(1024 ** 3 * 2.25), '2.250 GiB');
  assert.equal(formatBytes(1024 ** 4 * 3), '3.000 TiB');
  assert.equal(formatBytes(10n * 1024n * 1024n), '10.000 MiB');
});

test('formatRate, formatClock, formatDuration, formatPercent, formatCount', () => {
  assert.equal(formatRate(2 * 1024 * 1024), '2.000 MiB/s');
  assert.equal(formatRate(NaN), '? B/s');
  assert.equal(formatClock(0), '0:00');
  assert.equal(formatClock(65_999), '1:05');
  assert.equal(formatClock(3_725_000), '1:02:05');
  assert.equal(formatDuration(850), '850ms');
  assert.equal(formatDuration(12_345), '12.3s');
  assert.equal(formatDuration(245_000), '4m05s');
  assert.equal(formatDuration(2 * 3600_000 + 3 * 60_000), '2h03m');
  assert.equal(formatDuration(3 * 86400_000 + 4 * 3600_000), '3d04h');
  assert.equal(formatPercent(1, 4), '25.0%');
  assert.equal(formatPercent(5, 4), '100.0%');
  assert.equal(formatPercent(1, 0), '?');
  assert.equal(formatCount(1234567), '1,234,567');
  assert.equal(formatCount(12), '12');
});

test('table: aligned columns, right alignment, ANSI and wide characters measured by display width', () => {
  const red = '\u001b[31mred\u001b[39m';
  const lines = table(
    [{ header: 'ID' }, { header: 'Size', align: 'right' }, { header: 'Name' }],
    [
      ['a1', '5 B', red],
      ['bbbb', '1.000 KiB', '中文'],
    ],
  );
  assert.deepEqual(lines.map(stripAnsi), [
    'ID         Size  Name',
    '---------------------',
    'a1          5 B  red',
    'bbbb  1.000 KiB  中文',
  ]);
  assert.equal(displayWidth('中文'), 4);
  assert.equal(displayWidth(red), 3);
  // Newlines in cells do not break rows.
  assert.deepEqual(table([{ header: 'p' }], [['a\nb']], { noHeader: true }), ['a\\nb']);
});

test('colour level honours NO_COLOR, FORCE_COLOR, TTY and TERM=dumb', () => {
  const tty = { isTTY: true };
  const pipe = { isTTY: false };
  assert.equal(colorLevel(tty, { NO_COLOR: '1', FORCE_COLOR: '3' }), 0);
  assert.equal(colorLevel(tty, { NO_COLOR: '' }), 1, 'an empty NO_COLOR does not count');
  assert.equal(colorLevel(pipe, {}), 0);
  assert.equal(colorLevel(pipe, { FORCE_COLOR: '1' }), 1);
  assert.equal(colorLevel(pipe, { FORCE_COLOR: '' }), 1);
  assert.equal(colorLevel(tty, { FORCE_COLOR: '0' }), 0);
  assert.equal(colorLevel(tty, { TERM: 'dumb' }), 0);
  assert.equal(colorLevel(tty, { TERM: 'xterm-256color' }), 2);
  assert.equal(colorLevel(tty, { COLORTERM: 'truecolor' }), 3);
  assert.equal(colorsFor(tty, { NO_COLOR: 'x' }).red('boom'), 'boom');
  assert.match(colorsFor(pipe, { FORCE_COLOR: '1' }).red('boom'), /\u001b\[31mboom/);
});

class Sink extends Writable {
  data = '';
  writes = 0;
  isTTY: boolean;
  columns = 100;
  constructor(isTTY: boolean) {
    super();
    this.isTTY = isTTY;
  }
  override _write(chunk: Buffer, _enc: string, cb: () => void) {
    this.data += chunk.toString();
    this.writes++;
    cb();
  }
  cursorTo(x: number) {
    this.data += `\u001b[${x + 1}G`;
    return true;
  }
  moveCursor() {
    return true;
  }
  clearLine() {
    this.data += '\u001b[2K';
    return true;
  }
}

const asStream = (s: Sink) => s as unknown as NodeJS.WriteStream;

test('progress off a terminal without --json: nothing, but warnings as lines', () => {
  const s = new Sink(false);
  const p = createProgress({ json: false, quiet: false, stream: asStream(s), env: {} });
  assert.equal(p.mode, 'none');
  p.update({ phase: 'backup', bytesDone: 10, bytesTotal: 100 });
  p.update({ phase: 'backup', warning: 'cannot read /x: permission denied' });
  p.update({ phase: 'backup', done: true, bytesDone: 100 });
  p.stop();
  assert.equal(s.data, 'warning: cannot read /x: permission denied\n');
});

test('progress off a terminal with --json: JSON lines, at most one per interval, done always', () => {
  const s = new Sink(false);
  let now = 1_000_000;
  const p = createProgress({ json: true, quiet: false, stream: asStream(s), env: {}, now: () => now, jsonIntervalMs: 1000 });
  assert.equal(p.mode, 'json');
  for (let i = 0; i <= 30; i++) {
    p.update({ phase: 'backup', bytesDone: i * 1024 * 1024, bytesTotal: 40 * 1024 * 1024, filesDone: i, item: `/f${i}` });
    now += 100; // 31 events over 3 s
  }
  p.update({ phase: 'backup', warning: 'retrying' });
  p.update({ phase: 'backup', done: true, bytesDone: 40 * 1024 * 1024 });
  p.stop();
  const lines = s.data.trim().split('\n').map((l) => JSON.parse(l));
  const progress = lines.filter((l) => l.type === 'progress');
  assert.equal(progress.length, 5, 'events at 0s, 1s, 2s, 3s and the done event');
  assert.deepEqual(progress[0], {
    type: 'progress',
    phase: 'backup',
    elapsedMs: 0,
    item: '/f0',
    bytesDone: 0,
    bytesTotal: 41943040,
    filesDone: 0,
    percent: 0,
  });
  // 10 MiB in 1 s ⇒ 10 MiB/s, 30 MiB left ⇒ 3 s.
  assert.equal(progress[1].bytesPerSecond, 10 * 1024 * 1024);
  assert.equal(progress[1].etaSeconds, 3);
  assert.equal(progress[1].percent, 25);
  const done = progress[progress.length - 1];
  assert.equal(done.done, true);
  assert.equal(done.percent, 100);
  assert.equal(done.etaSeconds, undefined);
  assert.deepEqual(lines.find((l) => l.type === 'warning'), { type: 'warning', phase: 'backup', message: 'retrying' });
});

test('quiet: no progress even with --json, warnings still shown', () => {
  const s = new Sink(false);
  const p = createProgress({ json: true, quiet: true, stream: asStream(s), env: {} });
  p.update({ phase: 'x', bytesDone: 1, done: true });
  p.warn('careful');
  assert.equal(s.data, '{"type":"warning","message":"careful"}\n');
});

test('progress on a terminal: spinner text with sizes, files, rate; ≤10 redraws a second; done line persisted', async () => {
  const s = new Sink(true);
  // Wide enough that the item is never shortened: how much fits in 100 columns depends on how far
  // the counters got before the first frame, which depends on the machine's load.
  s.columns = 160;
  const p = createProgress({ json: false, quiet: false, stream: asStream(s), env: { NO_COLOR: '1' }, intervalMs: 100 });
  assert.equal(p.mode, 'tty');
  const start = Date.now();
  let done = 0;
  await new Promise<void>((resolve) => {
    const tick = () => {
      for (let i = 0; i < 200; i++) {
        done = Math.min(done + 64, 60 * 1024 * 1024);
        p.update({ phase: 'backup', bytesDone: done, bytesTotal: 64 * 1024 * 1024, filesDone: 3, item: '/data/some/file.bin' });
      }
      if (Date.now() - start < 1000) setImmediate(tick);
      else resolve();
    };
    tick();
  });
  const writesBeforeDone = s.writes;
  p.update({ phase: 'backup', warning: 'file changed while reading' });
  p.update({ phase: 'backup', done: true, bytesDone: done });
  p.stop();
  // ora writes a handful of chunks per frame; 10 frames/s over ~1 s bounds the writes.
  assert.ok(writesBeforeDone <= 12 * 4, `too many writes: ${writesBeforeDone}`);
  assert.ok(writesBeforeDone >= 2, 'spinner drew something');
  const text = stripAnsi(s.data);
  assert.match(text, /backup/);
  assert.match(text, /\d+\.\d{3} (KiB|MiB) \/ 64\.000 MiB/);
  assert.match(text, /3 files/);
  assert.match(text, /\d\.\d{3} [KMG]iB\/s/);
  assert.match(text, /ETA \d+:\d\d/);
  assert.match(text, /\/data\/some\/file\.bin/);
  assert.match(text, /warning: file changed while reading\n/);
  assert.match(text, /✔ backup/);
  assert.doesNotMatch(s.data, /\u001b\[3\dm/, 'NO_COLOR: no colour codes');
});

test('progress on a narrow terminal: a long item keeps its end and the line fits', async () => {
  const s = new Sink(true);
  s.columns = 95;
  const p = createProgress({ json: false, quiet: false, stream: asStream(s), env: { NO_COLOR: '1' }, intervalMs: 50 });
  p.update({ phase: 'backup', bytesDone: 1024, bytesTotal: 64 * 1024 * 1024, filesDone: 3, item: '/very/long/directory/name/that/cannot/fit/in/the/line/file.bin' });
  await new Promise((r) => setTimeout(r, 200));
  p.stop();
  const text = stripAnsi(s.data);
  assert.match(text, /…[^ ]*\/file\.bin/, 'the end of the path is kept behind an ellipsis');
  assert.doesNotMatch(text, /\/very\/long\/directory/, 'the start of the path is dropped');
  for (const frame of s.data.split(/[\r\n]|\u001b\[[0-9;]*[A-Za-z]/)) assert.ok([...frame].length <= 95, `frame wider than the terminal: ${frame}`);
});

test('logger filters by level and prefixes levels', () => {
  const out: string[] = [];
  const log = createLogger({ level: 'info', write: (l) => out.push(l) });
  log.debug('hidden');
  log.info('shown');
  log.warn('w');
  log.error('e1\ne2');
  assert.deepEqual(out, ['shown', 'warn: w', 'error: e1', 'error: e2']);
  assert.equal(log.enabled('debug'), false);
  const json: string[] = [];
  createLogger({ level: 'debug', write: (l) => json.push(l), json: true }).debug('d');
  assert.deepEqual(JSON.parse(json[0]!), { type: 'log', level: 'debug', message: 'd' });
});
