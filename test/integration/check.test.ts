// check on damaged repositories: each kind of damage is named by the damaged object's ID and makes
// check exit 5; a clean repository exits 0. The damage is made with the repository library (the
// index rewrite) or by editing files, on copies of one repository.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { promises as fsp, mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { dmctl, ok, restic, toolEnv, json, type ToolEnv } from '../support/run.js';
import { LocalBackend } from '../../src/storage/local.js';
import { Repository } from '../../src/repository/repository.js';
import { decodeIndex, encodeIndex } from '../../src/repository/index-file.js';
import { decodeSnapshot } from '../../src/repository/snapshot.js';
import { decodeTree } from '../../src/repository/tree.js';

interface Problem { kind: string; id: string; message: string }
interface Result { errors: Problem[]; hints: Problem[]; damaged: boolean; packsRead: number }

const work = mkdtempSync(path.join(os.tmpdir(), 'dmctl-check-'));
let base: ToolEnv;

before(async () => {
  base = toolEnv(path.join(work, 'base'));
  const src = path.join(work, 'src');
  await fsp.mkdir(path.join(src, 'a', 'b'), { recursive: true });
  for (let i = 0; i < 8; i++) await fsp.writeFile(path.join(src, i < 4 ? 'a' : 'a/b', `f${i}`), crypto.randomBytes(50_000 + i * 10_000));
  ok(await dmctl(base, ['repo', 'init']));
  ok(await dmctl(base, ['backup', '-q', src]));
  await fsp.writeFile(path.join(src, 'late'), crypto.randomBytes(200_000));
  ok(await restic(base, ['backup', '-q', src]));
});

after(async () => {
  await fsp.rm(work, { recursive: true, force: true });
});

async function copy(name: string): Promise<ToolEnv> {
  const t = toolEnv(path.join(work, name), base.password, base.home);
  await fsp.cp(base.repo, t.repo, { recursive: true });
  return t;
}

async function openRepo(t: ToolEnv): Promise<Repository> {
  const repo = await Repository.open(new LocalBackend(t.repo), t.password);
  await repo.loadIndex();
  return repo;
}

function packPath(t: ToolEnv, id: string): string {
  return path.join(t.repo, 'data', id.slice(0, 2), id);
}

/** A data pack (the largest one, so it holds file contents). */
async function dataPack(t: ToolEnv): Promise<string> {
  const repo = await openRepo(t);
  let best = '';
  let size = -1;
  for (const [id, blobs] of repo.index.packs) {
    const s = blobs.reduce((a, b) => a + b.length, 0);
    if (blobs[0].type === 'data' && s > size) [best, size] = [id, s];
  }
  await repo.backend.close();
  return best;
}

async function runCheck(t: ToolEnv, args: string[] = []): Promise<{ code: number | null; result: Result }> {
  const r = await dmctl(t, ['check', '--json', ...args]);
  return { code: r.code, result: json<Result>(r) };
}

function assertNamed(result: Result, id: string, kind: string | RegExp): void {
  const hit = result.errors.find((e) => e.id === id && (typeof kind === 'string' ? e.kind === kind : kind.test(e.kind)));
  assert.ok(hit, `no ${kind} error for ${id}; errors: ${JSON.stringify(result.errors, null, 1)}`);
  assert.ok(hit.message.includes(id), 'the message names the object');
}

test('a clean repository: check and check --read-data exit 0', async () => {
  const t = await copy('clean');
  const a = await runCheck(t);
  assert.equal(a.code, 0);
  assert.deepEqual(a.result.errors, []);
  const b = await runCheck(t, ['--read-data']);
  assert.equal(b.code, 0);
  assert.ok(b.result.packsRead >= 2);
  // Human output too.
  const h = ok(await dmctl(t, ['check']));
  assert.match(h.stdout.toString(), /no errors were found/);
});

test('missing pack: named, exit 5', async () => {
  const t = await copy('missing');
  const id = await dataPack(t);
  await fsp.rm(packPath(t, id));
  const { code, result } = await runCheck(t);
  assert.equal(code, 5);
  assertNamed(result, id, 'pack-missing');
  const human = await dmctl(t, ['check']);
  assert.equal(human.code, 5);
  assert.ok(human.stdout.toString().includes(id));
});

test('truncated pack: named, exit 5', async () => {
  const t = await copy('truncated');
  const id = await dataPack(t);
  const p = packPath(t, id);
  const st = await fsp.stat(p);
  await fsp.truncate(p, st.size - 1000);
  const { code, result } = await runCheck(t);
  assert.equal(code, 5);
  assertNamed(result, id, 'pack-size');
});

test('flipped bit inside a blob: only --read-data finds it, naming the pack and the blob', async () => {
  const t = await copy('bitflip');
  const id = await dataPack(t);
  const repo = await openRepo(t);
  const blob = repo.index.packs.get(id)![0];
  await repo.backend.close();
  const p = packPath(t, id);
  const buf = await fsp.readFile(p);
  buf[blob.offset + 40] ^= 0x10;
  await fsp.chmod(p, 0o600);
  await fsp.writeFile(p, buf);
  const plain = await runCheck(t);
  assert.equal(plain.code, 0, 'the structure is intact');
  const { code, result } = await runCheck(t, ['--read-data']);
  assert.equal(code, 5);
  assertNamed(result, id, 'pack-hash');
  assertNamed(result, blob.id, 'blob');
  // The subset that contains the pack finds it, the others do not read it.
  const bucket = (parseInt(id.slice(0, 2), 16) % 4) + 1;
  const hit = await runCheck(t, ['--read-data-subset', `${bucket}/4`]);
  assert.equal(hit.code, 5);
  const other = await runCheck(t, ['--read-data-subset', `${(bucket % 4) + 1}/4`]);
  assert.ok(!other.result.errors.some((e) => e.id === id));
});

test('missing index entry (index rewritten without one pack): named, exit 5', async () => {
  const t = await copy('noentry');
  const id = await dataPack(t);
  const repo = await openRepo(t);
  // Rewrite the index file holding the pack without it: write the new file, delete the old one.
  for (const f of await repo.list('index')) {
    const idx = decodeIndex(await repo.loadUnpacked('index', f));
    if (!idx.packs.some((p) => p.id === id)) continue;
    await repo.saveUnpacked('index', encodeIndex({ packs: idx.packs.filter((p) => p.id !== id) }));
    await repo.backend.remove('index', f);
  }
  const lost = repo.index.packs.get(id)!.map((b) => b.id);
  await repo.backend.close();
  const { code, result } = await runCheck(t);
  assert.equal(code, 5);
  // The pack is now unreferenced (a hint) and the file contents it held are missing blobs.
  assert.ok(result.hints.some((h) => h.id === id && h.kind === 'pack-unreferenced'));
  assert.ok(result.errors.some((e) => e.kind === 'blob-missing' && lost.includes(e.id)), JSON.stringify(result.errors));
  for (const e of result.errors.filter((x) => x.kind === 'blob-missing')) assert.ok(e.message.includes(e.id));
});

test('tree referencing a missing blob: the blob and the tree are named, exit 5', async () => {
  const t = await copy('badtree');
  const repo = await openRepo(t);
  // Write a new snapshot whose tree has a file pointing at a blob nobody stored.
  const snapId = (await repo.listSnapshotFiles())[0];
  const snap = decodeSnapshot(await repo.loadSnapshotJson(snapId));
  const root = decodeTree(await repo.loadBlob('tree', snap.tree));
  const missing = crypto.randomBytes(32).toString('hex');
  const tree = Buffer.from(JSON.stringify({ nodes: [{ name: 'ghost', type: 'file', mode: 420, mtime: '2020-01-01T00:00:00Z', atime: '2020-01-01T00:00:00Z', ctime: '2020-01-01T00:00:00Z', uid: 0, gid: 0, size: 5, content: [missing] }] }) + '\n');
  const treeId = crypto.createHash('sha256').update(tree).digest('hex');
  const w = repo.newWriter();
  await w.save('tree', treeId, tree);
  await w.flush();
  const raw = JSON.parse((await repo.loadSnapshotJson(snapId)).toString()) as Record<string, unknown>;
  raw.tree = treeId;
  await repo.saveUnpacked('snapshots', Buffer.from(JSON.stringify(raw)));
  await repo.backend.close();
  assert.ok(root.length > 0);
  const { code, result } = await runCheck(t);
  assert.equal(code, 5);
  assertNamed(result, missing, 'blob-missing');
  assert.ok(result.errors.find((e) => e.id === missing)!.message.includes(treeId), 'names the tree too');
  // restic agrees that this repository is damaged.
  assert.notEqual((await restic(t, ['check'])).code, 0);
});

test('--read-data-subset validates its argument like restic', async () => {
  const t = await copy('subset');
  for (const bad of ['0/3', '4/3', '1/257', '0%', '101%', 'abc']) {
    const r = await dmctl(t, ['check', '--read-data-subset', bad]);
    assert.equal(r.code, 2, `${bad}: ${r.stderr}`);
  }
  const r = await runCheck(t, ['--read-data-subset', '100%']);
  assert.equal(r.code, 0);
  assert.ok(r.result.packsRead >= 2);
});
