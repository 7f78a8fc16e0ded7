// Small files (under the chunker's MIN_SIZE, one blob each) are read, hashed, compressed and
// encrypted in the seal workers, in batches (archiver/small-files.ts). This drives the CLI as an
// ordinary user over a tree of many small files owned by root: contents repeated across files and
// batches must be stored once, empty files need no blob, files that user cannot read are left out
// with a warning and exit code 3, files owned by others are read at all (O_NOATIME is refused for
// them), and the real restic must find the repository sound and restore every other file.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { promises as fsp, mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { run, DMCTL_BIN, RESTIC_BIN, dmctl, restic, toolEnv, ok } from '../support/run.js';
import { fileDigests } from '../support/fixtures.js';
import { MIN_SIZE } from '../../src/chunker/chunker.js';

const work = mkdtempSync(path.join(os.tmpdir(), 'dmctl-small-'));
after(() => fsp.rm(work, { recursive: true, force: true }));

/** Runs dmctl as nobody. */
function asNobody(args: string[], env: Record<string, string>) {
  return run('setpriv', ['--reuid=nobody', '--regid=nogroup', '--clear-groups', process.execPath, DMCTL_BIN, ...args], { env });
}

test('a tree of small files backed up as another user: duplicates stored once, unreadable files left out (exit 3), restic checks and restores the rest', async () => {
  await fsp.chmod(work, 0o755);
  const src = path.join(work, 'src');
  const repo = path.join(work, 'repo');
  const home = path.join(work, 'home');
  await fsp.mkdir(home, { mode: 0o777 });
  await fsp.chmod(home, 0o777);
  // Contents: text that compresses, random bytes, sizes from empty to just under MIN_SIZE.
  const contents: Buffer[] = [Buffer.alloc(0)];
  for (let i = 1; i < 150; i++) {
    const size = i % 10 === 0 ? MIN_SIZE - 1 - i : Math.floor(Math.random() * (i % 3 ? 4096 : 150_000));
    contents.push(i % 2 ? crypto.randomBytes(size) : Buffer.from(`line ${i} of some text\n`.repeat(size / 20 + 1)).subarray(0, size));
  }
  const used = new Set<number>();
  let files = 0;
  for (let d = 0; d < 30; d++) {
    const dir = path.join(src, `d${d}`, d % 3 ? `sub${d}` : '');
    await fsp.mkdir(dir, { recursive: true });
    for (let f = 0; f < 40; f++) {
      const which = Math.floor(Math.random() * contents.length);
      used.add(which);
      await fsp.writeFile(path.join(dir, `f${f}`), contents[which], { mode: 0o644 });
      files++;
    }
  }
  // Two files nobody may read: one small (a batch's) and one that is chunked on the main thread.
  const secretSmall = path.join(src, 'd1', 'secret-small');
  const secretBig = path.join(src, 'd2', 'secret-big');
  await fsp.writeFile(secretSmall, crypto.randomBytes(1000), { mode: 0o600 });
  await fsp.writeFile(secretBig, crypto.randomBytes(MIN_SIZE * 3), { mode: 0o600 });
  for (const p of [secretSmall, secretBig]) await fsp.chmod(p, 0o000);
  await fsp.mkdir(repo, { mode: 0o777 });
  await fsp.chmod(repo, 0o777);

  const env = { DM_PASSWORD: 'small-pw', HOME: home, XDG_CONFIG_HOME: path.join(home, '.config'), XDG_CACHE_HOME: path.join(home, '.cache') };
  const init = await asNobody(['repo', 'init', '-r', path.join(repo, 'r')], env);
  assert.equal(init.code, 0, init.stderr);
  const b = await asNobody(['backup', '-r', path.join(repo, 'r'), src, '--json'], env);
  assert.equal(b.code, 3, `exit code 3 for unreadable files: ${b.stderr}`);
  const summary = JSON.parse(b.stdout.toString());
  assert.deepEqual(summary.errors.map((e: { path: string }) => e.path).sort(), [secretBig, secretSmall].sort());
  for (const e of summary.errors) assert.match(e.message, /permission denied/);
  assert.match(b.stderr, /secret-small/);
  assert.equal(summary.totalFilesProcessed, files, 'every readable file is in the snapshot');
  const distinct = [...used].filter((i) => contents[i].length > 0);
  assert.equal(summary.dataBlobs, distinct.length, 'one blob per distinct non-empty content');
  // (data added counts the trees too: well under a KiB per entry)
  const contentBytes = distinct.reduce((n, i) => n + contents[i].length, 0);
  assert.ok(summary.dataAdded >= contentBytes && summary.dataAdded < contentBytes + 1024 * (files + 100), `${summary.dataAdded} bytes added for ${contentBytes} of contents`);

  const check = await run(RESTIC_BIN, ['-r', path.join(repo, 'r'), 'check', '--read-data', '--no-cache'], { env: { RESTIC_PASSWORD: 'small-pw' } });
  assert.equal(check.code, 0, check.stderr + check.stdout.toString());
  const out = path.join(work, 'out');
  const restore = await run(RESTIC_BIN, ['-r', path.join(repo, 'r'), 'restore', 'latest', '--target', out, '--no-cache'], { env: { RESTIC_PASSWORD: 'small-pw' } });
  assert.equal(restore.code, 0, restore.stderr);
  const want = await fileDigests(src);
  delete want['d1/secret-small'];
  delete want['d2/secret-big'];
  assert.deepEqual(await fileDigests(path.join(out, src)), want);

  // The unreadable files given as targets themselves (after the restore above, which took the
  // latest snapshot): left out the same way, one warning each.
  const targets = await asNobody(['backup', '-r', path.join(repo, 'r'), secretSmall, secretBig, path.join(src, 'd0', 'f0')], env);
  assert.equal(targets.code, 3, `exit code 3 for unreadable targets: ${targets.stderr}`);
  assert.doesNotMatch(targets.stderr, /internal error/);
  for (const p of [secretSmall, secretBig]) assert.equal(targets.stderr.split('\n').filter((l) => l === `warning: ${p}: permission denied`).length, 1, `one warning for ${p}: ${targets.stderr}`);
  assert.match(targets.stdout.toString(), /snapshot \w+ saved/);
});

test('files whose sealed blobs are far smaller than the files: the backup finishes with a snapshot, restic restores it', async () => {
  // Unique text that zstd shrinks ~20x: each batch takes room in the seal pool's output ring for its
  // files' plain size, and gives it back once its blobs are written. The pack writer used to write
  // small blobs only a megabyte at a time, so such regions stayed held until the whole ring was, and
  // the backup stopped with exit status 0, no snapshot and its lock left (found in session 11).
  const src = path.join(work, 'compressible');
  await fsp.mkdir(path.join(src, 'small'), { recursive: true });
  await fsp.mkdir(path.join(src, 'mid'), { recursive: true });
  const text = (tag: string, size: number) => {
    const lines: string[] = [];
    let n = 0;
    for (let i = 0; n < size; i++) {
      const l = `${tag} line ${i} of a log that repeats itself a lot\n`;
      lines.push(l);
      n += l.length;
    }
    return Buffer.from(lines.join('')).subarray(0, size);
  };
  for (let i = 0; i < 200; i++) await fsp.writeFile(path.join(src, 'small', `f${i}.log`), text(`small ${i}`, 400 * 1024));
  for (let i = 0; i < 10; i++) await fsp.writeFile(path.join(src, 'mid', `m${i}.log`), text(`mid ${i}`, 3900 * 1024));
  const t = toolEnv(path.join(work, 'repo-compressible'), 'compressible-pw');
  ok(await dmctl(t, ['repo', 'init']));
  const b = await dmctl(t, ['backup', src, '--json']);
  assert.equal(b.code, 0, b.stderr);
  const summary = JSON.parse(b.stdout.toString());
  assert.match(summary.snapshotId, /^[0-9a-f]{64}$/);
  assert.equal(summary.totalFilesProcessed, 210);
  assert.ok(summary.dataAddedPacked * 5 < summary.dataAdded, `stored ${summary.dataAddedPacked} bytes for ${summary.dataAdded}: the data must compress well for this test to mean anything`);
  assert.deepEqual(await fsp.readdir(path.join(t.repo, 'locks')), [], 'the lock is released');
  ok(await restic(t, ['check', '--read-data']));
  const out = path.join(work, 'out-compressible');
  ok(await restic(t, ['restore', summary.snapshotId, '--target', out]));
  assert.deepEqual(await fileDigests(path.join(out, src)), await fileDigests(src));
});
