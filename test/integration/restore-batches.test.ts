// A restore of more files than one batch holds (4000): the batches' data phases overlap (the next
// batch's regions are read while the last ones of the previous batch are written), and every file
// must still come back byte for byte; a damaged pack in a later batch names exactly its files,
// removes them and leaves every other file intact.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { promises as fsp, mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { LocalBackend } from '../../src/storage/local.js';
import { Repository } from '../../src/repository/repository.js';
import { backup } from '../../src/archiver/archiver.js';
import { restore } from '../../src/restorer/restorer.js';
import { flipPackBit } from '../support/fixtures.js';

const work = mkdtempSync(path.join(os.tmpdir(), 'dmctl-batches-'));
after(() => fsp.rm(work, { recursive: true, force: true }));
const src = path.join(work, 'src');
const FILES = 9500; // three batches

/** Relative path → content digest, for every file below `root`. */
async function digests(root: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (d: string): Promise<void> => {
    for (const e of await fsp.readdir(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else out.set(path.relative(root, p), crypto.createHash('sha256').update(await fsp.readFile(p)).digest('hex'));
    }
  };
  await walk(root);
  return out;
}

test('a restore of three batches is exact, and damage in the last batch names only its files', async () => {
  for (let d = 0; d < 19; d++) {
    const dir = path.join(src, `d${String(d).padStart(2, '0')}`);
    await fsp.mkdir(dir, { recursive: true });
    for (let f = 0; f < FILES / 19; f++) await fsp.writeFile(path.join(dir, `f${f}`), crypto.randomBytes(200 + ((d * 31 + f) % 900)));
  }
  const want = await digests(src);
  assert.equal(want.size, FILES);
  const repoDir = path.join(work, 'repo');
  const repo = await Repository.init(new LocalBackend(repoDir), 'pw');
  await backup(repo, { paths: [src], host: 'h' });

  const t1 = path.join(work, 't1');
  const r1 = await restore(repo, { snapshot: 'latest', target: t1, verify: true });
  assert.equal(r1.files, FILES);
  // --verify re-read every file of every batch (the batches' counts were once lost to each other)
  assert.equal(r1.verified, FILES);
  assert.equal(r1.errors.length, 0);
  assert.deepEqual(await digests(path.join(t1, src)), want);

  // Damage one data pack holding files of the last directory (restored in the last batch).
  const victimFile = path.join(src, 'd18', 'f7');
  const content = await fsp.readFile(victimFile);
  const id = crypto.createHash('sha256').update(content).digest('hex');
  const loc = repo.index.lookup('data', id)!;
  await flipPackBit(repoDir, loc.packId, loc.offset + 40);
  const t2 = path.join(work, 't2');
  const fresh = await Repository.open(new LocalBackend(repoDir), 'pw');
  const r2 = await restore(fresh, { snapshot: 'latest', target: t2 });
  const got = await digests(path.join(t2, src));
  const failed = r2.errors.map((e) => e.path);
  assert.ok(failed.some((p) => p.endsWith(path.join('d18', 'f7'))), JSON.stringify(r2.errors.slice(0, 3)));
  for (const p of failed) assert.equal(got.has(path.relative(path.join(t2, src), p)), false, `${p} was left behind`);
  for (const [rel, digest] of got) assert.equal(digest, want.get(rel), `${rel} differs`);
  assert.equal(got.size + failed.length, FILES);
  await repo.backend.close();
  await fresh.backend.close();
});
