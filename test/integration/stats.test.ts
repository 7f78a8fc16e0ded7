// stats: every mode gives restic 0.14's numbers on the same repository (snapshots by both tools,
// hard links, a duplicated file), for all snapshots and for one; the Kanister-facing fields.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { promises as fsp, mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { dmctl, ok, restic, toolEnv, json, type ToolEnv } from '../support/run.js';

const work = mkdtempSync(path.join(os.tmpdir(), 'dmctl-stats-'));
const src = path.join(work, 'src');
let t: ToolEnv;

before(async () => {
  t = toolEnv(path.join(work, 'repo'));
  await fsp.mkdir(path.join(src, 'd', 'e'), { recursive: true });
  const same = crypto.randomBytes(70_000);
  for (let i = 0; i < 12; i++) await fsp.writeFile(path.join(src, i % 2 ? 'd' : 'd/e', `f${i}`), crypto.randomBytes(1_000 + i * 37_000));
  await fsp.writeFile(path.join(src, 'same1'), same);
  await fsp.writeFile(path.join(src, 'd/same2'), same);
  await fsp.link(path.join(src, 'd/f1'), path.join(src, 'hardlink'));
  await fsp.writeFile(path.join(src, 'empty'), '');
  await fsp.symlink('d/f1', path.join(src, 'sym'));
  ok(await dmctl(t, ['repo', 'init']));
  ok(await dmctl(t, ['backup', '-q', src]));
  await fsp.writeFile(path.join(src, 'd/f3'), crypto.randomBytes(123_456));
  ok(await restic(t, ['backup', '-q', src]));
});

after(async () => {
  await fsp.rm(work, { recursive: true, force: true });
});

for (const mode of ['restore-size', 'raw-data', 'files-by-contents', 'blobs-per-file']) {
  test(`stats --mode ${mode} equals restic's`, async () => {
    const want = json<Record<string, number>>(ok(await restic(t, ['stats', '--json', '--mode', mode])));
    const got = json<Record<string, number | string>>(ok(await dmctl(t, ['stats', '--json', '--mode', mode])));
    for (const k of Object.keys(want)) assert.equal(got[k], want[k], `${mode}: ${k}`);
    assert.equal(got.fileCount, want.total_file_count);
    assert.equal(got.mode, mode);
    assert.ok(want.total_size > 0);
  });
}

test('stats of one snapshot (ID and latest), human output and phase output', async () => {
  const snaps = json<{ id: string }[]>(ok(await dmctl(t, ['snapshots', '--json'])));
  for (const spec of [snaps[0].id.slice(0, 8), 'latest']) {
    const want = json<Record<string, number>>(ok(await restic(t, ['stats', '--json', spec])));
    const got = json<Record<string, number>>(ok(await dmctl(t, ['stats', '--json', spec])));
    assert.equal(got.total_size, want.total_size, spec);
    assert.equal(got.total_file_count, want.total_file_count, spec);
    assert.equal(got.snapshots_count, 1);
  }
  const human = ok(await dmctl(t, ['stats', 'latest', '--output-name', 'stats'])).stdout.toString();
  assert.match(human, /Total File Count: +\d+/);
  assert.match(human, /Total Size: +[\d.]+ (B|KiB|MiB)/);
  const line = human.split('\n').find((l) => l.startsWith('###Phase-output###: '))!;
  const v = JSON.parse(JSON.parse(line.slice('###Phase-output###: '.length)).value) as Record<string, string>;
  assert.equal(v.mode, 'restore-size');
  assert.match(v.fileCount, /^\d+$/);
  assert.equal((await dmctl(t, ['stats', '--mode', 'nonsense'])).code, 2);
});
