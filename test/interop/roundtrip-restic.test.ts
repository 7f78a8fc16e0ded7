// Interop with the real restic 0.14, both ways, on the awkward tree (test/support/fixtures.ts):
//  1. dmctl writes, restic reads: `restic check --read-data`, `restic restore` reproduces the tree
//     (content, modes, owners, ns mtimes, symlinks, hardlinks, fifo, device, xattrs, odd names),
//     `restic ls --json` lists every entry, `restic dump` reproduces a backup-stream.
//  2. restic writes, dmctl reads: `dmctl snapshots --json` equals `restic snapshots --json`,
//     `dmctl restore` reproduces the tree, `dmctl ls --json` matches `restic ls --json`,
//     `dmctl restore-stream` reproduces a `restic backup --stdin` stream.
//  3. One repository with snapshots of both tools: both list, restore and check all of them, and
//     restic takes dmctl's snapshot as parent without re-reading a file.
// Runs as root (owners, device nodes). restic restores ns mtimes; dmctl restores them to the
// microsecond (Node's utimes goes through libuv, which keeps microseconds only).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { diffManifests, generatedStream, goLossyUtf8, makeAwkwardTree, sha256Of, treeManifest, type Manifest, type EntryType } from '../support/fixtures.js';
import { dmctl, json, jsonLines, ok, restic, toolEnv, type RunResult, type ToolEnv } from '../support/run.js';

const TZ = { TZ: 'Europe/Berlin' };
const STREAM_SIZE = 24 << 20;
const STREAM_NAME = 'dir/db.sql';

let base = '';
let src = '';
let srcManifest: Manifest;
let streamSha = '';

before(async () => {
  assert.equal(process.getuid?.(), 0, 'these tests need root (owners, device nodes)');
  base = mkdtempSync(path.join(os.tmpdir(), 'dmctl-interop-rt-'));
  src = path.join(base, 'src');
  const info = makeAwkwardTree(src);
  assert.ok(info.devices, 'mknod c 1 3 failed: the device-node part of the test cannot run here');
  srcManifest = await treeManifest(src);
  streamSha = (await sha256Of(generatedStream('rt-stream', STREAM_SIZE))).sha256;
});

after(() => {
  if (base) rmSync(base, { recursive: true, force: true });
});

function freshRepo(tag: string): ToolEnv {
  return toolEnv(path.join(base, `repo-${tag}`), 'rt-pw', mkdtempSync(path.join(base, `home-${tag}-`)));
}

/** Restic's node type names for a manifest entry type. */
function resticType(t: EntryType): string {
  return t === 'blockdev' ? 'dev' : t;
}

/** Every path a snapshot of `src` holds, as restic and dmctl print them (invalid UTF-8 as U+FFFD). */
function expectedPaths(m: Manifest): string[] {
  const parts = src.split('/').filter(Boolean);
  const out: string[] = [];
  for (let i = 1; i <= parts.length; i++) out.push('/' + parts.slice(0, i).join('/'));
  for (const e of m.entries) if (e.path.toString() !== '.') out.push(`${src}/${e.path.toString('utf8')}`);
  return out.sort();
}

async function manifestOfRestore(target: string): Promise<Manifest> {
  return treeManifest(path.join(target, src));
}

async function dmctlBackup(t: ToolEnv, extra: string[] = []): Promise<Record<string, unknown>> {
  const r = ok(await dmctl(t, ['backup', src, '--json', ...extra], { env: TZ }));
  const summary = json<Record<string, unknown>>(r);
  assert.deepEqual(summary.errors, [], 'dmctl backup reported unreadable files');
  return summary;
}

async function dmctlBackupStream(t: ToolEnv, seed = 'rt-stream'): Promise<Record<string, unknown>> {
  const r = ok(await dmctl(t, ['backup-stream', '--name', STREAM_NAME, '--json'], { env: TZ, input: generatedStream(seed, STREAM_SIZE) }));
  return json<Record<string, unknown>>(r);
}

async function resticCheck(t: ToolEnv): Promise<void> {
  const r = ok(await restic(t, ['check', '--read-data'], { env: TZ }));
  assert.match(r.stdout.toString(), /no errors were found/);
}

/** Runs a command that writes a stream to stdout; returns the SHA-256 and size of what it wrote. */
async function hashOfOutput(runIt: (onStdout: (b: Buffer) => void) => Promise<RunResult>): Promise<{ sha256: string; size: number }> {
  const chunks: Buffer[] = [];
  ok(await runIt((b) => chunks.push(b)));
  return sha256Of(chunks);
}

function assertSameTree(actual: Manifest, how: string, mtimeResolutionNs: bigint): void {
  // Link targets go through a Go string in the tree: invalid UTF-8 bytes become U+FFFD (restic
  // does the same); everything else must be identical.
  const diff = diffManifests(srcManifest, actual, { linkTarget: goLossyUtf8, mtimeResolutionNs });
  assert.deepEqual(diff, [], `${how} did not reproduce the tree:\n${diff.join('\n')}`);
}

describe('dmctl writes, restic reads', { timeout: 150_000 }, () => {
  const t = (): ToolEnv => repo;
  let repo: ToolEnv;

  test('restic checks, restores, lists and dumps what dmctl wrote', async () => {
    repo = freshRepo('dm');
    ok(await dmctl(t(), ['repo', 'init'], { env: TZ }));
    const summary = await dmctlBackup(t());
    const files = srcManifest.entries.filter((e) => e.type === 'file').length;
    assert.equal(summary.totalFilesProcessed, files);
    const stream = await dmctlBackupStream(t());
    assert.equal(stream.totalBytesProcessed, STREAM_SIZE);

    await resticCheck(t());

    // snapshots: restic sees both, with dmctl's IDs
    const snaps = json<Array<Record<string, unknown>>>(ok(await restic(t(), ['snapshots', '--json'], { env: TZ })));
    assert.deepEqual(snaps.map((s) => s.id).sort(), [summary.snapshotId, stream.snapshotId].sort());
    const treeSnap = snaps.find((s) => s.id === summary.snapshotId)!;
    assert.deepEqual(treeSnap.paths, [src]);
    assert.deepEqual(snaps.find((s) => s.id === stream.snapshotId)!.paths, [`/${STREAM_NAME}`]);

    // restore: the same tree, nanosecond mtimes included
    const target = path.join(base, 'restore-restic-of-dm');
    ok(await restic(t(), ['restore', String(summary.snapshotId), '--target', target], { env: TZ }));
    assertSameTree(await manifestOfRestore(target), 'restic restore of a dmctl snapshot', 1n);

    // ls: every entry, with the right type
    const ls = jsonLines(ok(await restic(t(), ['ls', '--json', String(summary.snapshotId)], { env: TZ })));
    const nodes = ls.filter((n) => n.struct_type === 'node');
    assert.deepEqual(nodes.map((n) => String(n.path)).sort(), expectedPaths(srcManifest));
    for (const e of srcManifest.entries) {
      const p = e.path.toString() === '.' ? src : `${src}/${e.path.toString('utf8')}`;
      const n = nodes.find((x) => x.path === p)!;
      assert.equal(n.type, resticType(e.type), `type of ${p}`);
      if (e.type === 'file') assert.equal(n.size ?? 0, e.size, `size of ${p}`);
      assert.equal(n.uid, e.uid, `uid of ${p}`);
      assert.equal(n.gid, e.gid, `gid of ${p}`);
    }

    // dump: the stream, byte for byte
    const dumped = await hashOfOutput((onStdout) => restic(t(), ['dump', String(stream.snapshotId), `/${STREAM_NAME}`], { env: TZ, onStdout }));
    assert.equal(dumped.size, STREAM_SIZE);
    assert.equal(dumped.sha256, streamSha);
    const latest = await hashOfOutput((onStdout) => restic(t(), ['dump', 'latest', `/${STREAM_NAME}`], { env: TZ, onStdout }));
    assert.equal(latest.sha256, streamSha);
  });
});

describe('restic writes, dmctl reads', { timeout: 150_000 }, () => {
  test('dmctl lists, restores and dumps what restic wrote', async () => {
    const t = freshRepo('restic');
    ok(await restic(t, ['init'], { env: TZ }));
    ok(await restic(t, ['backup', src, '--tag', 'nightly', '--tag', 'db,tree', '--host', 'interop-host'], { env: TZ }));
    ok(await restic(t, ['backup', '--stdin', '--stdin-filename', STREAM_NAME, '--tag', 'stream'], { env: TZ, input: generatedStream('rt-stream', STREAM_SIZE) }));

    // snapshots: same IDs and the same fields, value for value
    const rs = json<Array<Record<string, unknown>>>(ok(await restic(t, ['snapshots', '--json'], { env: TZ })));
    const ds = json<Array<Record<string, unknown>>>(ok(await dmctl(t, ['snapshots', '--json'], { env: TZ })));
    assert.equal(rs.length, 2);
    assert.deepEqual(ds, rs);
    for (const s of ds) for (const k of ['time', 'tree', 'paths', 'hostname', 'username', 'id', 'short_id']) assert.ok(k in s, `dmctl snapshot lacks ${k}`);
    const treeSnap = rs.find((s) => (s.tags as string[]).includes('nightly'))!;
    const streamSnap = rs.find((s) => (s.tags as string[]).includes('stream'))!;
    assert.deepEqual(treeSnap.tags, ['nightly', 'db', 'tree']);
    assert.equal(treeSnap.hostname, 'interop-host');

    // restore: the same tree (mtimes to the microsecond)
    const target = path.join(base, 'restore-dm-of-restic');
    const rr = json<Record<string, unknown>>(ok(await dmctl(t, ['restore', String(treeSnap.id), '--target', target, '--json'], { env: TZ })));
    assert.deepEqual(rr.errors, []);
    assertSameTree(await manifestOfRestore(target), 'dmctl restore of a restic snapshot', 1000n);

    // ls: the same paths and node fields as restic's
    const rl = jsonLines(ok(await restic(t, ['ls', '--json', String(treeSnap.id)], { env: TZ }))).filter((n) => n.struct_type === 'node');
    const dl = json<{ nodes: Array<Record<string, unknown>> }>(ok(await dmctl(t, ['ls', '--json', String(treeSnap.short_id)], { env: TZ })));
    assert.deepEqual(dl.nodes.map((n) => n.path).sort(), rl.map((n) => n.path).sort());
    assert.deepEqual(dl.nodes.map((n) => n.path).sort(), expectedPaths(srcManifest));
    for (const r of rl) {
      const d = dl.nodes.find((n) => n.path === r.path)!;
      for (const k of ['name', 'type', 'uid', 'gid', 'size', 'mode', 'mtime', 'atime', 'ctime'] as const) {
        if (k in r) assert.deepEqual(d[k], r[k], `${k} of ${String(r.path)}`);
      }
    }

    // restore-stream: restic's --stdin stream, by snapshot and by name
    const s1 = await hashOfOutput((onStdout) => dmctl(t, ['restore-stream', String(streamSnap.short_id)], { env: TZ, onStdout }));
    assert.equal(s1.size, STREAM_SIZE);
    assert.equal(s1.sha256, streamSha);
    const s2 = await hashOfOutput((onStdout) => dmctl(t, ['restore-stream', 'latest', '--tag', 'stream', '--name', STREAM_NAME], { env: TZ, onStdout }));
    assert.equal(s2.sha256, streamSha);
  });
});

describe('one repository, snapshots from both tools', { timeout: 170_000 }, () => {
  test('both tools list, restore and check every snapshot', async () => {
    const t = freshRepo('mixed');
    ok(await restic(t, ['init'], { env: TZ }));
    const dmTree = await dmctlBackup(t, ['--tag', 'by-dmctl']);
    // restic takes dmctl's snapshot as parent (same host and paths) and reads no file again
    const rb = jsonLines(ok(await restic(t, ['backup', src, '--json', '--tag', 'by-restic'], { env: TZ })));
    const rsum = rb.find((m) => m.message_type === 'summary')!;
    const files = srcManifest.entries.filter((e) => e.type === 'file').length;
    assert.equal(rsum.files_unmodified, files, `restic re-read files dmctl had stored: ${JSON.stringify(rsum)}`);
    assert.equal(rsum.files_new, 0);
    assert.equal(rsum.data_blobs, 0);
    const dmStream = await dmctlBackupStream(t, 'mixed-stream');
    ok(await restic(t, ['backup', '--stdin', '--stdin-filename', STREAM_NAME], { env: TZ, input: generatedStream('rt-stream', STREAM_SIZE) }));

    const rs = json<Array<Record<string, unknown>>>(ok(await restic(t, ['snapshots', '--json'], { env: TZ })));
    const ds = json<Array<Record<string, unknown>>>(ok(await dmctl(t, ['snapshots', '--json'], { env: TZ })));
    assert.equal(rs.length, 4);
    assert.deepEqual(ds, rs);
    const byRestic = rs.find((s) => (s.tags as string[] | undefined)?.includes('by-restic'))!;
    assert.equal(byRestic.parent, dmTree.snapshotId, 'restic did not use the dmctl snapshot as parent');
    // restic's snapshot of the unchanged tree has the very same tree for the source directory as
    // dmctl's (the root tree also carries /tmp's own metadata, which concurrent tests change)
    const subtree = async (root: string): Promise<string> => {
      let id = root;
      for (const name of src.split('/').filter(Boolean)) {
        const tree = JSON.parse(ok(await restic(t, ['cat', 'blob', id], { env: TZ })).stdout.toString()) as { nodes: { name: string; subtree?: string }[] };
        const node = tree.nodes.find((n) => n.name === name);
        assert.ok(node?.subtree, `no directory ${name} on the way to ${src}`);
        id = node.subtree;
      }
      return id;
    };
    assert.equal(await subtree(String(byRestic.tree)), await subtree(String(rs.find((s) => s.id === dmTree.snapshotId)!.tree)));

    const mixedStreamSha = (await sha256Of(generatedStream('mixed-stream', STREAM_SIZE))).sha256;
    for (const s of rs) {
      const id = String(s.id);
      const isStream = (s.paths as string[])[0] === `/${STREAM_NAME}`;
      if (isStream) {
        const want = id === dmStream.snapshotId ? mixedStreamSha : streamSha;
        const byR = await hashOfOutput((onStdout) => restic(t, ['dump', id, `/${STREAM_NAME}`], { env: TZ, onStdout }));
        const byD = await hashOfOutput((onStdout) => dmctl(t, ['restore-stream', id], { env: TZ, onStdout }));
        assert.equal(byR.sha256, want, `restic dump of ${id.slice(0, 8)}`);
        assert.equal(byD.sha256, want, `dmctl restore-stream of ${id.slice(0, 8)}`);
      } else {
        const tr = path.join(base, `mixed-restic-${id.slice(0, 8)}`);
        const td = path.join(base, `mixed-dmctl-${id.slice(0, 8)}`);
        ok(await restic(t, ['restore', id, '--target', tr], { env: TZ }));
        ok(await dmctl(t, ['restore', id, '--target', td], { env: TZ }));
        assertSameTree(await manifestOfRestore(tr), `restic restore of ${id.slice(0, 8)}`, 1n);
        assertSameTree(await manifestOfRestore(td), `dmctl restore of ${id.slice(0, 8)}`, 1000n);
        rmSync(tr, { recursive: true, force: true });
        rmSync(td, { recursive: true, force: true });
      }
    }
    await resticCheck(t);
  });
});
