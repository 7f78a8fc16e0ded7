// The local cache of remote repositories (src/repository/cache.ts), against rclone's restic REST
// server behind a recording proxy: what is cached is byte for byte what the repository holds (index
// files and the packs of tree blobs), a walk of every tree then makes no request for trees or index
// files, a damaged cache is noticed and never changes what is restored, pruned packs leave the
// cache, and --no-cache reads everything from the repository.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, promises as fsp } from 'node:fs';
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { startRcloneRestic, RestServer } from '../support/servers.js';
import { startFaultProxy, FaultProxy } from '../support/fault-proxy.js';
import { ToolEnv, toolEnv, dmctl, ok, json } from '../support/run.js';
import { hashTree, seededBytes } from '../support/proc.js';
import { LocalBackend } from '../../src/storage/local.js';
import { Repository } from '../../src/repository/repository.js';

let work: string;
let rest: RestServer;
let proxy: FaultProxy;
let t: ToolEnv;
let src: string;
let cacheRoot: string;
let repoId: string;
const PW = 'cache-test-pw';

/** The repository as the server stores it, opened directly (the test's own view). */
async function repoView(): Promise<{ indexFiles: string[]; treePacks: string[]; allPacks: string[] }> {
  const repo = await Repository.open(new LocalBackend(rest.dir), PW);
  try {
    await repo.loadIndex();
    const treePacks = [...repo.index.packs.entries()].filter(([, blobs]) => blobs.every((b) => b.type === 'tree')).map(([id]) => id);
    return { indexFiles: (await repo.list('index')).sort(), treePacks: treePacks.sort(), allPacks: (await repo.list('data')).sort() };
  } finally {
    await repo.backend.close();
  }
}

async function cached(type: 'index' | 'data'): Promise<string[]> {
  const dir = path.join(cacheRoot, repoId, type);
  const names = (await fsp.readdir(dir, { recursive: true }).catch(() => [] as string[])).map(String);
  return names.filter((n) => /^([0-9a-f]{2}\/)?[0-9a-f]{64}$/.test(n)).map((n) => n.replace(/^..\//, '')).sort();
}

function repoFile(type: 'index' | 'data', id: string): string {
  return type === 'index' ? path.join(rest.dir, 'index', id) : path.join(rest.dir, 'data', id.slice(0, 2), id);
}

function cacheFile(type: 'index' | 'data', id: string): string {
  return type === 'index' ? path.join(cacheRoot, repoId, 'index', id) : path.join(cacheRoot, repoId, 'data', id.slice(0, 2), id);
}

/** Requests the proxy saw since `mark` that read index files or packs (not listings). */
function reads(mark: number): { index: string[]; data: string[] } {
  const got = proxy.recorded.slice(mark).filter((r) => r.method === 'GET');
  return {
    index: got.filter((r) => /\/index\/[0-9a-f]{64}$/.test(r.url)).map((r) => r.url),
    // (a whole file is asked for with no Range, or with "bytes=0-" as restic's REST client does)
    data: got.filter((r) => /\/data\/[0-9a-f]{64}$/.test(r.url)).map((r) => `${r.url} ${!r.headers.range || r.headers.range === 'bytes=0-' ? 'whole' : r.headers.range}`),
  };
}

const dm = (args: string[], env: Record<string, string | undefined> = {}) => dmctl(t, args, { env: { DM_CACHE_DIR: cacheRoot, ...env } });

before(async () => {
  work = mkdtempSync(path.join(os.tmpdir(), 'dmctl-cache-'));
  rest = await startRcloneRestic(path.join(work, 'server'));
  proxy = await startFaultProxy(rest.url, {});
  t = toolEnv(`rest:${proxy.url.replace(/\/?$/, '/')}`, PW, path.join(work, 'home'));
  await fsp.mkdir(t.home, { recursive: true });
  cacheRoot = path.join(work, 'cache');
  // A tree of 40 directories (so that there are many tree blobs to walk) with a few files each.
  src = path.join(work, 'src');
  for (let d = 0; d < 40; d++) {
    const dir = path.join(src, `d${d % 8}`, `sub${d}`);
    await fsp.mkdir(dir, { recursive: true });
    for (let f = 0; f < 3; f++) await fsp.writeFile(path.join(dir, `f${f}.bin`), seededBytes(500 + d * 100 + f, `c-${d}-${f}`));
  }
  ok(await dm(['repo', 'init']));
  ok(await dm(['backup', src]));
  const repo = await Repository.open(new LocalBackend(rest.dir), PW);
  repoId = repo.config.id;
  await repo.backend.close();
});

after(async () => {
  await proxy?.stop();
  await rest?.stop();
  await fsp.rm(work, { recursive: true, force: true });
});

test('after a backup the cache holds exactly the index files and tree packs of the repository, byte for byte', async () => {
  const view = await repoView();
  assert.ok(view.treePacks.length > 0);
  assert.deepEqual(await cached('index'), view.indexFiles);
  assert.deepEqual(await cached('data'), view.treePacks);
  for (const id of view.indexFiles) assert.ok((await fsp.readFile(cacheFile('index', id))).equals(await fsp.readFile(repoFile('index', id))), `index ${id}`);
  for (const id of view.treePacks) assert.ok((await fsp.readFile(cacheFile('data', id))).equals(await fsp.readFile(repoFile('data', id))), `pack ${id}`);
  assert.match(await fsp.readFile(path.join(cacheRoot, 'CACHEDIR.TAG'), 'utf8'), /^Signature: 8a477f597d28d172789f06886806bc55/);
});

test('with the cache, walking every tree reads no tree and no index file from the repository; --no-cache reads them all', async () => {
  let mark = proxy.recorded.length;
  const withCache = ok(await dm(['ls', 'latest', '--json']));
  const r = reads(mark);
  assert.deepEqual(r, { index: [], data: [] });
  mark = proxy.recorded.length;
  const noCache = ok(await dm(['ls', 'latest', '--json', '--no-cache']));
  const r2 = reads(mark);
  const view = await repoView();
  assert.equal(r2.index.length, view.indexFiles.length);
  // Without the cache every tree pack is read from the repository (the span of its trees, once).
  for (const p of view.treePacks) assert.ok(r2.data.some((d) => d.includes(p)), `tree pack ${p} not read without the cache`);
  assert.ok(r2.data.length <= view.treePacks.length, `tree packs read more than once: ${r2.data.length} reads for ${view.treePacks.length} packs`);
  assert.equal(withCache.stdout.toString(), noCache.stdout.toString());
});

test('an empty cache is filled by whole-pack reads, and the restore is exact', async () => {
  await fsp.rm(path.join(cacheRoot, repoId), { recursive: true, force: true });
  const mark = proxy.recorded.length;
  const target = path.join(work, 'restore1');
  ok(await dm(['restore', 'latest', '--target', target]));
  assert.deepEqual(await hashTree(path.join(target, src)), await hashTree(src));
  const view = await repoView();
  const treeReads = reads(mark).data.filter((d) => view.treePacks.some((p) => d.includes(p)));
  assert.deepEqual(treeReads.sort(), view.treePacks.map((p) => `/data/${p} whole`).sort(), 'each tree pack read once, whole');
  assert.deepEqual(await cached('data'), view.treePacks);
});

test('a damaged cache is noticed and dropped: the restore is still exact and the next run reads the repository', async () => {
  const view = await repoView();
  for (const [type, id] of [['data', view.treePacks[0]!], ['index', view.indexFiles[0]!]] as const) {
    const f = cacheFile(type, id);
    const b = await fsp.readFile(f);
    b[Math.floor(b.length / 2)] ^= 0xff;
    await fsp.writeFile(f, b);
  }
  const target = path.join(work, 'restore2');
  ok(await dm(['restore', 'latest', '--target', target]));
  assert.deepEqual(await hashTree(path.join(target, src)), await hashTree(src));
  // Whatever is in the cache now is the repository's bytes again (or absent, to be fetched anew).
  for (const id of await cached('index')) assert.ok((await fsp.readFile(cacheFile('index', id))).equals(await fsp.readFile(repoFile('index', id))), `index ${id}`);
  for (const id of await cached('data')) assert.ok((await fsp.readFile(cacheFile('data', id))).equals(await fsp.readFile(repoFile('data', id))), `pack ${id}`);
  ok(await dm(['ls', 'latest']));
  assert.deepEqual(await cached('data'), view.treePacks);
});

test('packs removed by prune leave the cache; index files the repository no longer lists too', async () => {
  await fsp.writeFile(path.join(src, 'd0', 'sub0', 'new.txt'), 'a change\n');
  ok(await dm(['backup', src]));
  const snaps = json<{ id: string }[]>(ok(await dm(['snapshots', '--json'])));
  ok(await dm(['forget', snaps[0]!.id, '--prune', '--max-unused', '0']));
  ok(await dm(['ls', 'latest']));
  const view = await repoView();
  assert.deepEqual(await cached('index'), view.indexFiles);
  assert.deepEqual(await cached('data'), view.treePacks);
  for (const id of await cached('data')) assert.ok(view.allPacks.includes(id));
});

test('--no-cache creates no cache, and a local repository is never cached', async () => {
  const other = path.join(work, 'other-cache');
  ok(await dm(['ls', 'latest', '--no-cache'], { DM_CACHE_DIR: other }));
  await assert.rejects(fsp.stat(other));
  const local = toolEnv(path.join(work, 'local-repo'), PW, t.home);
  ok(await dmctl(local, ['repo', 'init'], { env: { DM_CACHE_DIR: other } }));
  ok(await dmctl(local, ['backup', src], { env: { DM_CACHE_DIR: other } }));
  ok(await dmctl(local, ['ls', 'latest'], { env: { DM_CACHE_DIR: other } }));
  await assert.rejects(fsp.stat(other));
});

test('check reads the repository, not the cache: a damaged tree pack in the repository is found although the cache holds a good copy', async () => {
  const view = await repoView();
  ok(await dm(['ls', 'latest']));
  const id = view.treePacks[0]!;
  assert.ok((await cached('data')).includes(id));
  const f = repoFile('data', id);
  const good = await fsp.readFile(f);
  const bad = Buffer.from(good);
  bad[10] ^= 0xff;
  await fsp.chmod(f, 0o600);
  await fsp.writeFile(f, bad);
  try {
    // Without --read-data only the trees' decoding would notice: from the cache, they decode fine.
    const r = await dm(['check']);
    assert.equal(r.code, 5, r.stderr + r.stdout.toString());
    assert.match(r.stdout.toString() + r.stderr, new RegExp(id.slice(0, 8)));
  } finally {
    await fsp.writeFile(f, good);
  }
  ok(await dm(['check', '--read-data']));
});

/** The cached copies of key files (DIR/keys/*): [key ID, body] each. */
async function keyCopies(): Promise<{ file: string; id: string; body: Buffer }[]> {
  const dir = path.join(cacheRoot, 'keys');
  const out: { file: string; id: string; body: Buffer }[] = [];
  for (const n of await fsp.readdir(dir).catch(() => [] as string[])) {
    const raw = await fsp.readFile(path.join(dir, n));
    const nl = raw.indexOf(0x0a);
    out.push({ file: path.join(dir, n), id: raw.subarray(0, nl).toString(), body: raw.subarray(nl + 1) });
  }
  return out;
}

const keyReads = (mark: number) => proxy.recorded.slice(mark).filter((r) => r.method === 'GET' && /\/keys\/[0-9a-f]{64}$/.test(r.url)).map((r) => r.url);

test('the key file that opened the repository is kept (0600, byte for byte) and the next open reads no key file', async () => {
  ok(await dm(['snapshots']));
  const copies = await keyCopies();
  assert.equal(copies.length, 1);
  const { file, id, body } = copies[0]!;
  assert.ok(body.equals(await fsp.readFile(path.join(rest.dir, 'keys', id))), 'the copy is the repository key file');
  assert.equal((await fsp.stat(file)).mode & 0o777, 0o600);
  const mark = proxy.recorded.length;
  ok(await dm(['snapshots']));
  assert.deepEqual(keyReads(mark), []);
  // Without a cache the key file is read as usual.
  const mark2 = proxy.recorded.length;
  ok(await dm(['snapshots', '--no-cache']));
  assert.deepEqual(keyReads(mark2), [`/keys/${id}`]);
});

test('a copy of a removed key opens nothing, and a copy that is not a key file is ignored', async () => {
  const pw2 = path.join(work, 'second-pw');
  await fsp.writeFile(pw2, 'second-password\n');
  const added = json<{ id: string }>(ok(await dm(['key', 'add', '--new-password-file', pw2, '--json']))).id;
  ok(await dm(['snapshots'], { DM_PASSWORD: 'second-password' }));
  const copy = (await keyCopies())[0]!;
  assert.equal(copy.id, added, 'the second password opened with the added key');
  const saved = await fsp.readFile(copy.file);
  ok(await dm(['key', 'remove', added.slice(0, 12)]));
  // The key is gone from the repository; its copy is put back in the cache: it must not open it.
  await fsp.writeFile(copy.file, saved, { mode: 0o600 });
  const r = await dm(['snapshots'], { DM_PASSWORD: 'second-password' });
  assert.equal(r.code, 12, r.stderr);
  // A copy whose bytes are not what its name says (edited or truncated) is not used.
  ok(await dm(['snapshots']));
  const good = (await keyCopies())[0]!;
  const edited = Buffer.from(await fsp.readFile(good.file));
  edited[edited.length - 5] ^= 0x01;
  await fsp.writeFile(good.file, edited);
  const mark = proxy.recorded.length;
  ok(await dm(['snapshots']));
  assert.deepEqual(keyReads(mark), [`/keys/${good.id}`]);
  assert.ok((await keyCopies())[0]!.body.equals(good.body), 'the good copy is written again');
});

test('repo init keeps the key file it wrote, so that the first backup reads no key file', async () => {
  const other: ToolEnv = { ...t, repo: `rest:${proxy.url.replace(/\/?$/, '/')}second-repo/` };
  const otherCache = path.join(work, 'init-cache');
  ok(await dmctl(other, ['repo', 'init'], { env: { DM_CACHE_DIR: otherCache } }));
  const names = await fsp.readdir(path.join(otherCache, 'keys'));
  assert.equal(names.length, 1);
  const raw = await fsp.readFile(path.join(otherCache, 'keys', names[0]!));
  const id = raw.subarray(0, 64).toString();
  assert.ok(raw.subarray(65).equals(await fsp.readFile(path.join(rest.dir, 'second-repo', 'keys', id))));
  const mark = proxy.recorded.length;
  ok(await dmctl(other, ['backup', src], { env: { DM_CACHE_DIR: otherCache } }));
  assert.deepEqual(keyReads(mark), []);
});

test('a remote backup fills its packs in temp files and leaves none; a killed run\'s temp pack goes; with no writable temp folder packs are filled in memory', async () => {
  const tmp = path.join(cacheRoot, repoId, 'tmp');
  // A temp pack left by a run that was killed: this host, a process that has exited.
  const dead = spawnSync('true').pid!;
  await fsp.mkdir(tmp, { recursive: true });
  const host = os.hostname().replace(/[^A-Za-z0-9.]/g, '').slice(0, 64);
  const stale = path.join(tmp, `${host}-${dead}-0123456789abcdef-tmp-dmctl-pack`);
  await fsp.writeFile(stale, seededBytes(4096, 'stale'));
  const restoreIsExact = async (dir: string, target: string) => {
    ok(await dm(['restore', 'latest', '--target', target]));
    assert.deepEqual(await hashTree(path.join(target, dir)), await hashTree(dir));
  };

  // New data: packs filled in the cache's tmp folder, uploaded, removed.
  const more = path.join(work, 'more');
  await fsp.mkdir(more, { recursive: true });
  await fsp.writeFile(path.join(more, 'a.bin'), seededBytes(3_000_000, 'temp-pack-a'));
  let mark = proxy.recorded.length;
  ok(await dm(['backup', more]));
  const saved = proxy.recorded.slice(mark).filter((r) => r.method === 'POST' && /\/data\/[0-9a-f]{64}$/.test(r.url));
  assert.ok(saved.length >= 2, 'a data and a tree pack were uploaded');
  assert.deepEqual(await fsp.readdir(tmp), [], 'temp packs (the stale one too) are gone');
  await restoreIsExact(more, path.join(work, 'tp-1'));

  // Without the cache the system's temp folder is used, and left empty.
  const sysTmp = path.join(work, 'systmp');
  await fsp.mkdir(sysTmp);
  await fsp.writeFile(path.join(more, 'b.bin'), seededBytes(2_000_000, 'temp-pack-b'));
  ok(await dm(['backup', more, '--no-cache'], { TMPDIR: sysTmp }));
  assert.deepEqual(await fsp.readdir(path.join(sysTmp, 'dmctl-packs')), []);
  await restoreIsExact(more, path.join(work, 'tp-2'));

  // No temp folder can be made (a file stands where it would go): packs are filled in memory.
  await fsp.rm(tmp, { recursive: true });
  await fsp.writeFile(tmp, 'not a folder');
  await fsp.writeFile(path.join(more, 'c.bin'), seededBytes(2_000_000, 'temp-pack-c'));
  mark = proxy.recorded.length;
  ok(await dm(['backup', more]));
  assert.ok(proxy.recorded.slice(mark).some((r) => r.method === 'POST' && /\/data\/[0-9a-f]{64}$/.test(r.url)));
  await restoreIsExact(more, path.join(work, 'tp-3'));
  ok(await dm(['check', '--read-data']));
  await fsp.rm(tmp);
});
