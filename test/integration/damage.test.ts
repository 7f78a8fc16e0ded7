// Damaged repository data: a truncated, bit-flipped or deleted data pack, a bit flip in an index or
// a snapshot file. dmctl must exit 5 naming the damaged pack and the affected files, never write a
// file with wrong bytes (damaged files are absent), and still restore everything undamaged.
// Which file lives in which pack is read with the real restic (`cat index`, `cat blob`), not with
// dmctl, so the test does not trust the code it tests.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { mkdtempSync, promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { EXIT_CODES } from '../../src/core/errors.js';
import { ToolEnv, toolEnv, dmctl, restic, ok, json, run } from '../support/run.js';
import { dmctlPipe, hashTree, oneErrorLine, seededBytes } from '../support/proc.js';

let work: string;
let base: ToolEnv;
let src: string;
let treeSnap: string;
let streamSnap: string;
/** Original content per path relative to src. */
let originals: Map<string, string>;
const streamData = seededBytes(24 * 1024 * 1024, 'stream');

interface IndexBlob {
  id: string;
  type: 'data' | 'tree';
  offset: number;
  length: number;
}
interface PackInfo {
  id: string;
  size: number;
  blobs: IndexBlob[];
}
/** Data packs of the tree snapshot, and each file's content blob IDs (path relative to src). */
let packs: PackInfo[];
let fileBlobs: Map<string, string[]>;
/** Data packs that hold the stream snapshot's blobs. */
let streamPacks: Set<string>;
let streamContent: string[];

interface TreeJson {
  nodes: { name: string; type: string; content?: string[] | null; subtree?: string }[];
}

async function resticCatBlob(id: string): Promise<TreeJson> {
  return json<TreeJson>(ok(await restic(base, ['--no-lock', 'cat', 'blob', id])));
}

/** path (relative to the snapshot root, '/'-joined) → content of every file, walked with restic. */
async function filesOf(snapshotId: string): Promise<Map<string, string[]>> {
  const snap = json<{ tree: string }>(ok(await restic(base, ['--no-lock', 'cat', 'snapshot', snapshotId])));
  const out = new Map<string, string[]>();
  async function walk(tree: string, prefix: string): Promise<void> {
    for (const n of (await resticCatBlob(tree)).nodes) {
      const p = `${prefix}/${n.name}`;
      if (n.type === 'dir') await walk(n.subtree!, p);
      else if (n.type === 'file') out.set(p, n.content ?? []);
    }
  }
  await walk(snap.tree, '');
  return out;
}

before(async () => {
  work = mkdtempSync(path.join(os.tmpdir(), 'dmctl-damage-'));
  base = toolEnv(path.join(work, 'repo'), 'damage-pw', path.join(work, 'home'));
  await fsp.mkdir(base.home, { recursive: true });
  ok(await dmctl(base, ['repo', 'init']));
  // Several data packs: 8 files of 5 MiB plus 60 small ones, all incompressible and distinct.
  src = path.join(work, 'src');
  await fsp.mkdir(path.join(src, 'small'), { recursive: true });
  for (let i = 0; i < 8; i++) await fsp.writeFile(path.join(src, `big${i}.bin`), seededBytes(5 * 1024 * 1024, `big${i}`));
  for (let i = 0; i < 60; i++) await fsp.writeFile(path.join(src, 'small', `f${i}.txt`), seededBytes(500 + i * 700, `small${i}`));
  originals = await hashTree(src);
  const b = ok(await dmctl(base, ['backup', src, '--json']));
  treeSnap = json<{ snapshotId: string }>(b).snapshotId;
  const s = ok(await dmctl(base, ['backup-stream', '--name', 'dump.bin', '--json'], { input: streamData }));
  streamSnap = json<{ snapshotId: string }>(s).snapshotId;

  // The layout, as restic sees it.
  const all = new Map<string, PackInfo>();
  for (const idx of ok(await restic(base, ['--no-lock', 'list', 'index'])).stdout.toString().split('\n').filter(Boolean)) {
    const ij = json<{ packs: { id: string; blobs: IndexBlob[] }[] }>(ok(await restic(base, ['--no-lock', 'cat', 'index', idx])));
    for (const p of ij.packs) {
      const st = await fsp.stat(path.join(base.repo, 'data', p.id.slice(0, 2), p.id));
      all.set(p.id, { id: p.id, size: st.size, blobs: p.blobs });
    }
  }
  const srcPrefix = src.split(path.sep).join('/');
  fileBlobs = new Map();
  for (const [p, content] of await filesOf(treeSnap)) {
    assert.ok(p.startsWith(srcPrefix + '/'), p);
    fileBlobs.set(p.slice(srcPrefix.length + 1), content);
  }
  assert.equal(fileBlobs.size, originals.size);
  const treeBlobIds = new Set([...fileBlobs.values()].flat());
  packs = [...all.values()].filter((p) => p.blobs.every((b) => b.type === 'data') && p.blobs.some((b) => treeBlobIds.has(b.id)));
  assert.ok(packs.length >= 2, `want at least 2 data packs for the tree, got ${packs.length}`);
  const [, content] = [...(await filesOf(streamSnap)).entries()][0]!;
  streamContent = content;
  const sIds = new Set(content);
  streamPacks = new Set([...all.values()].filter((p) => p.blobs.some((b) => sIds.has(b.id))).map((p) => p.id));
  assert.ok(streamPacks.size >= 1);
});

after(async () => {
  await fsp.rm(work, { recursive: true, force: true });
});

let copies = 0;
/** A private copy of the repository to damage. */
async function copyRepo(): Promise<ToolEnv> {
  const dir = path.join(work, `copy${copies++}`);
  ok(await run('cp', ['-a', base.repo, dir]));
  return { ...base, repo: dir };
}

function packPath(t: ToolEnv, id: string): string {
  return path.join(t.repo, 'data', id.slice(0, 2), id);
}

async function flipBit(file: string, offset: number): Promise<void> {
  await fsp.chmod(file, 0o600);
  const fh = await fsp.open(file, 'r+');
  try {
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, offset);
    b[0] ^= 0x10;
    await fh.write(b, 0, 1, offset);
  } finally {
    await fh.close();
  }
}

/** Files that have at least one blob among `lost`. */
function affected(lost: Set<string>): Set<string> {
  const out = new Set<string>();
  for (const [p, ids] of fileBlobs) if (ids.some((id) => lost.has(id))) out.add(p);
  return out;
}

/**
 * Restores the tree snapshot from a damaged copy and checks: exit 5, the pack and (some) affected
 * files named, every file present has its original bytes, damaged files absent, all others present.
 */
async function restoreDamaged(t: ToolEnv, packId: string, lost: Set<string>, what: string): Promise<void> {
  const damaged = affected(lost);
  assert.ok(damaged.size >= 1, `${what}: the damage hits no file (test setup)`);
  const target = path.join(work, `target-${path.basename(t.repo)}`);
  const r = await dmctl(t, ['restore', treeSnap, '--target', target]);
  const out = r.stdout.toString() + r.stderr;
  assert.equal(r.code, EXIT_CODES.DAMAGED, `${what}: exit ${r.code}, wanted 5:\n${out}`);
  assert.ok(out.includes(packId.slice(0, 10)), `${what}: output does not name pack ${packId.slice(0, 10)}:\n${out}`);
  for (const p of damaged) assert.ok(out.includes(p), `${what}: output does not name the damaged file ${p}:\n${out}`);
  assert.ok(!/\n\s+at /.test(r.stderr), `${what}: stack trace:\n${r.stderr}`);
  assert.equal(r.stderr.split('\n').filter((l) => l.startsWith('dmctl: ')).length, 1, `${what}: one final error line:\n${r.stderr}`);

  const restoredRoot = path.join(target, src);
  const got = await hashTree(restoredRoot);
  for (const [rel, h] of got) assert.equal(h, originals.get(rel), `${what}: ${rel} was written with wrong bytes`);
  for (const p of damaged) assert.ok(!got.has(p), `${what}: damaged file ${p} is present in the target`);
  for (const p of originals.keys()) if (!damaged.has(p)) assert.ok(got.has(p), `${what}: undamaged file ${p} was not restored`);
  // Nothing else (temp files, partial copies) in the target.
  assert.deepEqual([...got.keys()].filter((k) => !originals.has(k)), []);
}

test('truncated data pack: restore exits 5, names the pack and files, writes no wrong bytes', async () => {
  const t = await copyRepo();
  const pack = packs[0]!;
  const cut = Math.floor(pack.size / 2);
  await fsp.chmod(packPath(t, pack.id), 0o600);
  await fsp.truncate(packPath(t, pack.id), cut);
  const lost = new Set(pack.blobs.filter((b) => b.offset + b.length > cut).map((b) => b.id));
  await restoreDamaged(t, pack.id, lost, 'truncated pack');
});

test('one flipped bit in the middle of a data pack: only the file holding that blob is missing', async () => {
  const t = await copyRepo();
  const pack = packs[1 % packs.length]!;
  const mid = Math.floor(pack.size / 2);
  const hit = pack.blobs.find((b) => b.offset <= mid && mid < b.offset + b.length);
  assert.ok(hit, 'the middle of the pack lies in a blob');
  await flipBit(packPath(t, pack.id), mid);
  await restoreDamaged(t, pack.id, new Set([hit.id]), 'bit flip');
});

test('deleted data pack: every file with data in it is missing and named, the rest restores', async () => {
  const t = await copyRepo();
  const pack = packs[packs.length - 1]!;
  await fsp.rm(packPath(t, pack.id));
  await restoreDamaged(t, pack.id, new Set(pack.blobs.map((b) => b.id)), 'deleted pack');
});

test('restore-stream of a damaged stream: exit 5 naming the pack, output only a correct prefix', async () => {
  for (const kind of ['flip', 'delete'] as const) {
    const t = await copyRepo();
    // Damage the pack holding a blob in the middle of the stream.
    const midBlob = streamContent[Math.floor(streamContent.length / 2)]!;
    let packId = '';
    let blob: IndexBlob | undefined;
    for (const id of streamPacks) {
      const ij = await findBlob(t, id, midBlob);
      if (ij) {
        packId = id;
        blob = ij;
      }
    }
    assert.ok(blob && packId, 'pack of the middle stream blob');
    if (kind === 'flip') await flipBit(packPath(t, packId), blob.offset + Math.floor(blob.length / 2));
    else await fsp.rm(packPath(t, packId));
    const h = crypto.createHash('sha256');
    let n = 0;
    const r = await dmctlPipe(t, ['restore-stream', streamSnap], {
      onStdout: (c) => {
        h.update(c);
        n += c.length;
      },
    });
    assert.equal(r.code, EXIT_CODES.DAMAGED, `${kind}: exit ${r.code}:\n${r.stderr}`);
    const msg = oneErrorLine(r.stderr);
    assert.ok(msg.includes(packId.slice(0, 10)), `${kind}: message does not name pack ${packId.slice(0, 10)}: ${msg}`);
    // What reached stdout before the failure is exactly the beginning of the stream.
    assert.ok(n < streamData.length, `${kind}: the whole stream was written despite the damage`);
    assert.equal(h.digest('hex'), crypto.createHash('sha256').update(streamData.subarray(0, n)).digest('hex'), `${kind}: wrong bytes on stdout`);
  }
});

/** The index entry of blob `id` in pack `packId`, read with restic. */
async function findBlob(t: ToolEnv, packId: string, id: string): Promise<IndexBlob | undefined> {
  for (const idx of ok(await restic(t, ['--no-lock', 'list', 'index'])).stdout.toString().split('\n').filter(Boolean)) {
    const ij = json<{ packs: { id: string; blobs: IndexBlob[] }[] }>(ok(await restic(t, ['--no-lock', 'cat', 'index', idx])));
    const b = ij.packs.find((p) => p.id === packId)?.blobs.find((x) => x.id === id);
    if (b) return b;
  }
  return undefined;
}

test('one flipped bit in an index file: exit 5 with one clear line, nothing restored', async () => {
  const t = await copyRepo();
  const idx = (await fsp.readdir(path.join(t.repo, 'index')))[0]!;
  const file = path.join(t.repo, 'index', idx);
  await flipBit(file, Math.floor((await fsp.stat(file)).size / 2));
  const target = path.join(work, 'target-index');
  for (const args of [['restore', treeSnap, '--target', target], ['backup', src]]) {
    const r = await dmctl(t, args);
    assert.equal(r.code, EXIT_CODES.DAMAGED, `${args[0]} with a damaged index: exit ${r.code}:\n${r.stderr}`);
    const msg = oneErrorLine(r.stderr.split('\n').filter((l) => !l.startsWith('warning: ')).join('\n'));
    assert.match(msg, /index/, msg);
    assert.ok(msg.includes(idx.slice(0, 10)), `names the index file: ${msg}`);
  }
  const got = await hashTree(target).catch(() => new Map<string, string>());
  assert.deepEqual([...got.keys()], [], 'nothing restored with a damaged index');
});

test('one flipped bit in a snapshot file: exit 5 with one clear line naming the snapshot', async () => {
  const t = await copyRepo();
  const file = path.join(t.repo, 'snapshots', treeSnap);
  await flipBit(file, Math.floor((await fsp.stat(file)).size / 2));
  const target = path.join(work, 'target-snapshot');
  const r = await dmctl(t, ['restore', treeSnap, '--target', target]);
  assert.equal(r.code, EXIT_CODES.DAMAGED, `exit ${r.code}:\n${r.stderr}`);
  const msg = oneErrorLine(r.stderr);
  assert.match(msg, /snapshot/);
  assert.ok(msg.includes(treeSnap.slice(0, 8)), msg);
  assert.equal(await fsp.stat(path.join(target, src)).then(() => true, () => false), false, 'nothing restored from a damaged snapshot');
  // The other snapshot is unaffected.
  const h = crypto.createHash('sha256');
  const s = await dmctlPipe(t, ['restore-stream', streamSnap], { onStdout: (c) => h.update(c) });
  assert.equal(s.code, 0, s.stderr);
  assert.equal(h.digest('hex'), crypto.createHash('sha256').update(streamData).digest('hex'));
});
