// Tree walks on a local repository (prune's used-blob search; check, stats, backup and restore load
// trees the same way): the trees of a pack are read in one request, not one per directory, the walk
// finds every referenced blob, and a damaged tree is still named with its pack.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { promises as fsp, mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { LocalBackend } from '../../src/storage/local.js';
import type { Backend, FileType } from '../../src/storage/backend.js';
import { Repository } from '../../src/repository/repository.js';
import { sha256hex } from '../../src/repository/crypto.js';
import { findUsedBlobs } from '../../src/maintenance/prune.js';
import { IntegrityError } from '../../src/core/errors.js';
import { flipPackBit } from '../support/fixtures.js';

const work = mkdtempSync(path.join(os.tmpdir(), 'dmctl-treewalk-'));
after(() => fsp.rm(work, { recursive: true, force: true }));

/** A LocalBackend that records every read of a pack. */
class CountingBackend extends LocalBackend {
  readonly packReads: string[] = [];
  override load(type: FileType, name: string, offset?: number, length?: number): Promise<Buffer> {
    if (type === 'data') this.packReads.push(name);
    return super.load(type, name, offset, length);
  }
}

const treeJson = (nodes: object[]) => Buffer.from(JSON.stringify({ nodes }) + '\n');

/** A repository with a root tree, 200 directory trees below it, each naming two data blobs. */
async function buildRepo(dir: string): Promise<{ root: string; trees: string[]; data: string[] }> {
  const repo = await Repository.init(new LocalBackend(dir), 'pw');
  const w = repo.newWriter();
  const trees: string[] = [];
  const data: string[] = [];
  const dirs: object[] = [];
  for (let i = 0; i < 200; i++) {
    const blobs = [crypto.randomBytes(100), crypto.randomBytes(100)];
    const ids = blobs.map((b) => sha256hex(b));
    for (let k = 0; k < 2; k++) await w.save('data', ids[k]!, blobs[k]!);
    data.push(...ids);
    const sub = treeJson([{ name: `f${i}`, type: 'file', mode: 420, content: ids }]);
    const subId = sha256hex(sub);
    await w.save('tree', subId, sub);
    trees.push(subId);
    dirs.push({ name: `d${String(i).padStart(3, '0')}`, type: 'dir', mode: 2147484141, subtree: subId });
  }
  const root = treeJson(dirs);
  const rootId = sha256hex(root);
  await w.save('tree', rootId, root);
  await w.flush();
  await repo.backend.close();
  return { root: rootId, trees: [rootId, ...trees], data };
}

test('a walk reads each tree pack once and finds every referenced blob', async () => {
  const dir = path.join(work, 'r1');
  const { root, trees, data } = await buildRepo(dir);
  const be = new CountingBackend(dir);
  const repo = await Repository.open(be as Backend, 'pw');
  await repo.loadIndex();
  const treePacks = new Set(trees.map((t) => repo.index.lookup('tree', t)!.packId));
  be.packReads.length = 0;
  const used = await findUsedBlobs(repo, [root]);
  assert.deepEqual([...used.tree].sort(), [...trees].sort());
  assert.deepEqual([...used.data].sort(), [...data].sort());
  assert.deepEqual(be.packReads.sort(), [...treePacks].sort(), `${be.packReads.length} pack reads for ${trees.length} trees in ${treePacks.size} pack(s)`);
  await be.close();
});

test('a damaged tree in the pack is named with its pack, and the walk fails', async () => {
  const dir = path.join(work, 'r2');
  const { root, trees } = await buildRepo(dir);
  const repo = await Repository.open(new LocalBackend(dir), 'pw');
  await repo.loadIndex();
  const victim = trees[57]!;
  const loc = repo.index.lookup('tree', victim)!;
  await flipPackBit(dir, loc.packId, loc.offset + 20);
  await repo.backend.close();

  const again = await Repository.open(new LocalBackend(dir), 'pw');
  await again.loadIndex();
  await assert.rejects(findUsedBlobs(again, [root]), (err: unknown) => {
    assert.ok(err instanceof IntegrityError, String(err));
    assert.match(err.message, new RegExp(`tree blob ${victim.slice(0, 10)}.*pack ${loc.packId.slice(0, 10)}`));
    return true;
  });
  await again.backend.close();
});
