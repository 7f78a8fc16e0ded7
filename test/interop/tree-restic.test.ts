// Interop: the real restic 0.14 backs up a directory full of awkward entries; every tree it wrote
// must decode and re-encode to the very same bytes, nodeFromStat of every entry must encode to
// exactly restic's node, and the snapshot files (decrypted here with node:crypto) must round-trip.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { createDecipheriv, createHash, randomBytes, scryptSync } from 'node:crypto';
import { chmodSync, chownSync, linkSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import * as xattr from '@napi-rs/xattr';
import { decompress } from '@mongodb-js/zstd';
import { decodeTree, encodeNode, encodeTree, type Node } from '../../src/repository/tree.js';
import { decodeSnapshot, encodeSnapshot } from '../../src/repository/snapshot.js';
import { formatGoTime } from '../../src/repository/gotime.js';
import { nodeFromStat } from '../../src/archiver/fsnode.js';
import { applyMetadata, makeSpecial } from '../../src/restorer/fsmeta.js';

const run = promisify(execFile);
const PASSWORD = 'interop-pw';
const TZ = 'Europe/Berlin';
const savedTz = process.env.TZ;

let base = '';
let repo = '';
const env = (): NodeJS.ProcessEnv => ({ ...process.env, RESTIC_PASSWORD: PASSWORD, TZ, RESTIC_CACHE_DIR: join(base, 'cache') });

async function restic(...args: string[]): Promise<Buffer> {
  const { stdout } = await run('restic', ['-r', repo, '--no-cache', ...args], { env: env(), cwd: base, encoding: 'buffer', maxBuffer: 64 << 20 });
  return stdout;
}

function sh(cmd: string, args: Array<string>): void {
  const r = spawnSync(cmd, args, { env: { ...process.env, TZ } });
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')}: ${r.stderr}`);
}

const B = (s: string | number[]): Buffer => (typeof s === 'string' ? Buffer.from(s, 'utf8') : Buffer.from(s));
const pj = (...parts: Buffer[]): Buffer => Buffer.concat(parts.flatMap((p, i) => (i === 0 ? [p] : [B('/'), p])));

/** Builds the source tree. Names are bytes; some are not UTF-8. */
function buildSource(data: string): Buffer[] {
  const d = B(data);
  mkdirSync(data);
  writeFileSync(join(data, 'file'), 'hello\n');
  xattr.setAttributeSync(join(data, 'file'), 'user.a', B('v1'));
  xattr.setAttributeSync(join(data, 'file'), 'user.bin', B([0, 255, 10]));
  linkSync(join(data, 'file'), join(data, 'hardlink'));
  writeFileSync(join(data, 'empty'), '');
  xattr.setAttributeSync(join(data, 'empty'), 'user.e', Buffer.alloc(0));
  writeFileSync(join(data, 'big.bin'), randomBytes(8 << 20)); // several chunks
  for (const n of ['with space', 'q"t', 'a\\b', 'nl\nx', 'tab\tx', 'ls\u2028x', '<&>', 'emoji😀', 'café', 'nbsp\u00a0']) {
    writeFileSync(pj(d, B(n)), n);
  }
  writeFileSync(pj(d, B([0x62, 0x61, 0x64, 0xff, 0x62, 0x79, 0x74, 0x65])), 'bad byte');
  symlinkSync('file', join(data, 'sym'));
  symlinkSync(B([0x74, 0x67, 0x74, 0xff, 0x3c]), pj(d, B('badsym')));
  sh('mkfifo', [join(data, 'fifo')]);
  sh('mknod', [join(data, 'chardev'), 'c', '1', '3']);
  sh('mknod', [join(data, 'blockdev'), 'b', '7', '200']);
  writeFileSync(join(data, 'suid'), '#!/bin/sh\n');
  chmodSync(join(data, 'suid'), 0o4755);
  mkdirSync(join(data, 'sticky'));
  chmodSync(join(data, 'sticky'), 0o1777);
  writeFileSync(join(data, 'sticky', 'inside'), 'x');
  mkdirSync(join(data, 'sgid'));
  chmodSync(join(data, 'sgid'), 0o2775);
  mkdirSync(join(data, 'emptydir'));
  // a directory whose name is not UTF-8, with xattrs on it and on a child
  mkdirSync(join(data, 'dtmp'));
  writeFileSync(join(data, 'dtmp', 'f'), 'child');
  xattr.setAttributeSync(join(data, 'dtmp'), 'user.dx', B('1'));
  xattr.setAttributeSync(join(data, 'dtmp', 'f'), 'user.fx', B('2'));
  renameSync(join(data, 'dtmp'), pj(d, B([0x64, 0xff])));
  mkdirSync(join(data, 'sub', 'deeper'), { recursive: true });
  writeFileSync(join(data, 'sub', 'deeper', 'leaf.txt'), 'leaf');
  // ownership: a uid/gid without names, and nobody/nogroup
  writeFileSync(join(data, 'orphan'), 'o');
  chownSync(join(data, 'orphan'), 12345, 12345);
  writeFileSync(join(data, 'nobody'), 'n');
  chownSync(join(data, 'nobody'), 65534, 65534);
  // times with nanoseconds in summer and winter (different offsets in Europe/Berlin) and before 1970
  writeFileSync(join(data, 'summer'), 's');
  sh('touch', ['-h', '-d', '2020-07-01 12:00:00.123456789', join(data, 'summer')]);
  writeFileSync(join(data, 'winter'), 'w');
  sh('touch', ['-h', '-d', '2020-01-01 12:00:00.100000000', join(data, 'winter')]);
  writeFileSync(join(data, 'old'), 'o');
  sh('touch', ['-h', '-d', '1960-03-04 05:06:07.000000009', join(data, 'old')]);
  sh('touch', ['-h', '-d', '2019-07-01 00:00:00.5', join(data, 'sym')]);
  // the top-level names, listed now: reading the directory later would change its atime, which the
  // --with-atime snapshot is compared against (restic itself reads with O_NOATIME)
  return readdirSync(data, { encoding: 'buffer' });
}

/** Decrypts a file of the repository (unpacked type) with the key file, as restic stores it. */
async function readRepoFile(type: string, id: string): Promise<Buffer> {
  const keysDir = join(repo, 'keys');
  const key = JSON.parse(readFileSync(join(keysDir, readdirSync(keysDir)[0]!), 'utf8')) as { N: number; r: number; p: number; salt: string; data: string };
  const dk = scryptSync(PASSWORD, Buffer.from(key.salt, 'base64'), 64, { N: key.N, r: key.r, p: key.p, maxmem: 512 << 20 });
  const open = (k: Buffer, blob: Buffer): Buffer => {
    const d = createDecipheriv('aes-256-ctr', k, blob.subarray(0, 16));
    return Buffer.concat([d.update(blob.subarray(16, blob.length - 16)), d.final()]);
  };
  const master = JSON.parse(open(dk.subarray(0, 32), Buffer.from(key.data, 'base64')).toString()) as { encrypt: string };
  const plain = open(Buffer.from(master.encrypt, 'base64'), readFileSync(join(repo, type, id)));
  return plain[0] === 0x02 ? decompress(plain.subarray(1)) : plain;
}

interface Walked {
  treeId: string;
  raw: Buffer;
  dir: Buffer;
}

const walkCache = new Map<string, Walked[]>();

/** All trees below rootTree (breadth first), with the directory each one describes. */
async function walkTrees(rootTree: string): Promise<Walked[]> {
  const cached = walkCache.get(rootTree);
  if (cached) return cached;
  const out: Walked[] = [];
  walkCache.set(rootTree, out);
  const queue: Array<{ id: string; dir: Buffer }> = [{ id: rootTree, dir: B(base) }];
  while (queue.length > 0) {
    const { id, dir } = queue.shift()!;
    const raw = await restic('cat', 'blob', id);
    out.push({ treeId: id, raw, dir });
    for (const n of decodeTree(raw)) if (n.type === 'dir' && n.subtree) queue.push({ id: n.subtree, dir: pj(dir, n.name) });
  }
  return out;
}

let snapshots: Array<{ id: string; tree: string }> = [];
let topNames: Buffer[] = [];

before(async () => {
  process.env.TZ = TZ;
  base = mkdtempSync(join(tmpdir(), 'dmctl-tree-interop-'));
  repo = join(base, 'repo');
  topNames = buildSource(join(base, 'data'));
  await restic('init');
  await restic('backup', '--host', 'h<1>', 'data');
  // second backup: parent, tags, excludes, real atimes
  await restic('backup', '--with-atime', '--tag', 'daily,x&y', '--exclude', '*.nomatch', '--host', 'h<1>', 'data');
  const list = JSON.parse((await restic('snapshots', '--json')).toString()) as Array<{ id: string; tree: string; time: string }>;
  list.sort((a, b) => a.time.localeCompare(b.time));
  snapshots = list.map((s) => ({ id: s.id, tree: s.tree }));
  assert.equal(snapshots.length, 2);
});

after(() => {
  if (savedTz === undefined) delete process.env.TZ;
  else process.env.TZ = savedTz;
  if (base) rmSync(base, { recursive: true, force: true });
});

test('every tree restic wrote re-encodes to the same bytes', async () => {
  let trees = 0;
  let nodes = 0;
  for (const s of snapshots) {
    for (const w of await walkTrees(s.tree)) {
      assert.equal(createHash('sha256').update(w.raw).digest('hex'), w.treeId);
      const decoded = decodeTree(w.raw);
      assert.ok(encodeTree(decoded).equals(w.raw), `tree ${w.treeId} differs:\n${w.raw}\n${encodeTree(decoded)}`);
      trees++;
      nodes += decoded.length;
    }
  }
  assert.ok(trees >= 12, `only ${trees} trees`);
  assert.ok(nodes >= 60, `only ${nodes} nodes`);
});

test('the awkward names come back as the original bytes', async () => {
  const walked = await walkTrees(snapshots[0]!.tree);
  const dataTree = walked.find((w) => w.dir.equals(pj(B(base), B('data'))))!;
  const names = decodeTree(dataTree.raw).map((n) => n.name);
  assert.deepEqual([...names].sort(Buffer.compare), [...topNames].sort(Buffer.compare));
  const raw = dataTree.raw.toString('utf8');
  assert.ok(raw.includes('"name":"bad\\\\xffbyte"'));
  assert.ok(raw.includes('"name":"nl\\\\nx"'));
  assert.ok(raw.includes('"linktarget":"tgt\\ufffd\\u003c"'));
});

test('nodeFromStat encodes to exactly the node restic stored', async () => {
  const withAtime = [false, true];
  let compared = 0;
  for (const [i, s] of snapshots.entries()) {
    for (const w of await walkTrees(s.tree)) {
      for (const rn of decodeTree(w.raw)) {
        const full = pj(w.dir, rn.name);
        const st = lstatSync(full, { bigint: true });
        const ours: Node = await nodeFromStat(rn.name, full, st, { withAtime: withAtime[i] });
        ours.content = rn.content;
        if (rn.subtree !== undefined) ours.subtree = rn.subtree;
        assert.equal(encodeNode(ours), encodeNode(rn), `entry ${full.toString('latin1')} in snapshot ${i + 1}`);
        compared++;
      }
    }
  }
  assert.ok(compared >= 60, `only ${compared} entries compared`);
});

test('spot checks: offsets per instant, devices, xattrs, owners', async () => {
  const walked = await walkTrees(snapshots[0]!.tree);
  const data = decodeTree(walked.find((w) => w.dir.equals(pj(B(base), B('data'))))!.raw);
  const get = (n: string | number[]): Node => data.find((x) => x.name.equals(B(n)))!;
  assert.equal(formatGoTime(get('summer').mtime), '2020-07-01T12:00:00.123456789+02:00');
  assert.equal(formatGoTime(get('winter').mtime), '2020-01-01T12:00:00.1+01:00');
  assert.equal(formatGoTime(get('old').mtime), '1960-03-04T05:06:07.000000009+01:00');
  assert.equal(get('chardev').device, 259n);
  assert.equal(get('blockdev').device, 1992n);
  assert.equal(get('hardlink').links, 2n);
  assert.deepEqual(get('empty').extendedAttributes, [{ name: 'user.e', value: Buffer.alloc(0) }]);
  assert.deepEqual(get([0x64, 0xff]).extendedAttributes, [{ name: 'user.dx', value: B('1') }]);
  assert.equal(get('orphan').user, undefined);
  assert.equal(get('nobody').user, 'nobody');
  assert.equal(get('nobody').group, 'nogroup');
  assert.deepEqual(get('badsym').linktarget, B([0x74, 0x67, 0x74, 0xff, 0x3c]));
  assert.equal(get('big.bin').content!.length >= 2, true);
});

test('snapshot files restic stored round-trip byte-exactly', async () => {
  for (const s of snapshots) {
    const raw = await readRepoFile('snapshots', s.id);
    assert.equal(createHash('sha256').update(await readFileSync(join(repo, 'snapshots', s.id))).digest('hex'), s.id);
    const decoded = decodeSnapshot(raw);
    assert.equal(decoded.tree, s.tree);
    assert.ok(encodeSnapshot(decoded).equals(raw), `snapshot ${s.id}:\n${raw}\n${encodeSnapshot(decoded)}`);
    // restic cat snapshot re-indents: same fields
    assert.deepEqual(decodeSnapshot(await restic('cat', 'snapshot', s.id)), decoded);
  }
  const second = decodeSnapshot(await readRepoFile('snapshots', snapshots[1]!.id));
  assert.equal(second.parent, snapshots[0]!.id);
  assert.deepEqual(second.tags, ['daily', 'x&y']);
  assert.deepEqual(second.excludes, ['*.nomatch']);
  assert.equal(second.hostname, 'h<1>');
  assert.equal(second.uid, undefined); // root: omitted
  assert.ok(second.time.offsetSec === 3600 || second.time.offsetSec === 7200);
});

test('a rewritten snapshot (restic tag) carries original and round-trips', async () => {
  await restic('tag', '--add', 'extra', snapshots[1]!.id);
  const list = JSON.parse((await restic('snapshots', '--json')).toString()) as Array<{ id: string }>;
  const fresh = list.map((x) => x.id).find((id) => !snapshots.some((s) => s.id === id))!;
  const raw = await readRepoFile('snapshots', fresh);
  const decoded = decodeSnapshot(raw);
  assert.equal(decoded.original, snapshots[1]!.id);
  assert.deepEqual(decoded.tags, ['daily', 'x&y', 'extra']);
  assert.ok(encodeSnapshot(decoded).equals(raw), `${raw}\n${encodeSnapshot(decoded)}`);
});

test('applyMetadata/makeSpecial recreate what restic recorded', async () => {
  const walked = await walkTrees(snapshots[0]!.tree);
  const dataDir = pj(B(base), B('data'));
  const data = decodeTree(walked.find((w) => w.dir.equals(dataDir))!.raw);
  const target = B(join(base, 'restored'));
  mkdirSync(target);
  let checked = 0;
  for (const rn of data) {
    const p = pj(target, rn.name);
    switch (rn.type) {
      case 'file': writeFileSync(p, readFileSync(pj(dataDir, rn.name))); break;
      case 'dir': mkdirSync(p); break;
      case 'symlink': symlinkSync(rn.linktarget!, p); break;
      default: await makeSpecial(p, rn);
    }
    await applyMetadata(p, rn, { owner: true });
    const back = await nodeFromStat(rn.name, p, lstatSync(p, { bigint: true }));
    const what = p.toString('latin1');
    assert.equal(back.type, rn.type, what);
    assert.equal(back.mode, rn.mode, what);
    assert.equal(back.uid, rn.uid, what);
    assert.equal(back.gid, rn.gid, what);
    assert.equal(back.device, rn.device, what);
    assert.deepEqual(back.linktarget, rn.linktarget, what);
    assert.deepEqual(back.extendedAttributes, rn.extendedAttributes, what);
    // utimes takes float seconds: equal to the microsecond
    const us = (t: { unixSec: number; nsec: number }): number => t.unixSec * 1e6 + Math.floor(t.nsec / 1000);
    assert.ok(Math.abs(us(back.mtime) - us(rn.mtime)) <= 1, `${what} mtime ${formatGoTime(back.mtime)} vs ${formatGoTime(rn.mtime)}`);
    checked++;
  }
  assert.ok(checked >= 25);
  // the xattrs of a non-UTF-8 file name are set through a temporary name
  const odd = pj(target, B([0x6f, 0x64, 0x64, 0xfe]));
  writeFileSync(odd, 'x');
  const t = data.find((n) => n.name.equals(B('file')))!;
  await applyMetadata(odd, { ...t, name: B([0x6f, 0x64, 0x64, 0xfe]) }, { owner: false });
  assert.equal(lstatSync(odd).mode & 0o7777, 0o644);
  assert.deepEqual(readdirSync(target, { encoding: 'buffer' }).filter((n) => n.toString().startsWith('.dmctl-tmp')), []);
});

test('makeSpecial creates fifos and devices under names that are not UTF-8', async () => {
  const dir = B(join(base, 'special'));
  mkdirSync(dir);
  const data = decodeTree((await walkTrees(snapshots[0]!.tree)).find((w) => w.dir.equals(pj(B(base), B('data'))))!.raw);
  for (const kind of ['fifo', 'chardev', 'blockdev']) {
    const rn = data.find((n) => n.name.equals(B(kind)))!;
    const p = pj(dir, B([0xff]), B(kind));
    if (kind === 'fifo') mkdirSync(pj(dir, B([0xff])));
    await makeSpecial(p, rn);
    const st = lstatSync(p, { bigint: true });
    const back = await nodeFromStat(rn.name, p, st);
    assert.equal(back.type, rn.type);
    assert.equal(back.device, rn.device);
    await assert.rejects(makeSpecial(p, rn)); // exists
  }
  assert.deepEqual(readdirSync(pj(dir, B([0xff])), { encoding: 'buffer' }).map(String).sort(), ['blockdev', 'chardev', 'fifo']);
});
