// Dedup between dmctl and the real restic 0.14 in one repository, both ways: the same files (or
// the same stream) backed up by the second tool add no data blob, because both chunk identically
// with the repository's polynomial and hash identically. And the parent snapshot: an unchanged
// tree is not read again, a modified file is the only one stored again.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { diffManifests, generatedStream, pseudoRandom, treeManifest } from '../support/fixtures.js';
import { dmctl, json, jsonLines, ok, restic, toolEnv, type ToolEnv } from '../support/run.js';

const TZ = { TZ: 'Europe/Berlin' };
const STREAM_SIZE = 16 << 20;
const FILES = 5;

let base = '';
let data = '';

before(() => {
  assert.equal(process.getuid?.(), 0, 'these tests run as root');
  base = mkdtempSync(path.join(os.tmpdir(), 'dmctl-interop-dedup-'));
  data = path.join(base, 'data');
  mkdirSync(data);
  // several multi-MiB files: random, random with zero runs, repetitive text
  writeFileSync(path.join(data, 'r1.bin'), pseudoRandom('dedup/1', 4 << 20));
  writeFileSync(path.join(data, 'r2.bin'), pseudoRandom('dedup/2', 5 << 20));
  writeFileSync(path.join(data, 'r3.bin'), pseudoRandom('dedup/3', 3 << 20));
  writeFileSync(path.join(data, 'mixed.bin'), Buffer.concat([pseudoRandom('dedup/m1', 2 << 20), Buffer.alloc(3 << 20), pseudoRandom('dedup/m2', 2 << 20)]));
  const line = Buffer.from('2026-01-01 12:00:00 INFO request served in 12 ms\n');
  writeFileSync(path.join(data, 'log.txt'), Buffer.concat(Array.from({ length: (3 << 20) / line.length }, (_, i) => Buffer.from(`${i} ${line}`))));
});

after(() => {
  if (base) rmSync(base, { recursive: true, force: true });
});

function freshRepo(tag: string): ToolEnv {
  return toolEnv(path.join(base, `repo-${tag}`), 'dedup-pw', mkdtempSync(path.join(base, `home-${tag}-`)));
}

/** Blob counts by type, as restic lists them. */
async function blobCounts(t: ToolEnv): Promise<{ data: number; tree: number }> {
  const out = ok(await restic(t, ['list', 'blobs'], { env: TZ })).stdout.toString();
  const lines = out.split('\n').filter(Boolean);
  const data = new Set(lines.filter((l) => l.startsWith('data ')).map((l) => l.slice(5)));
  const tree = new Set(lines.filter((l) => l.startsWith('tree ')).map((l) => l.slice(5)));
  return { data: data.size, tree: tree.size };
}

function resticSummary(lines: Array<Record<string, unknown>>): Record<string, number> {
  const s = lines.find((m) => m.message_type === 'summary');
  assert.ok(s, 'restic backup --json printed no summary');
  return s as Record<string, number>;
}

async function snapshotsById(t: ToolEnv): Promise<Map<string, Record<string, unknown>>> {
  const list = json<Array<Record<string, unknown>>>(ok(await restic(t, ['snapshots', '--json'], { env: TZ })));
  return new Map(list.map((s) => [String(s.id), s]));
}

// Targets are given relative to their parent directory, so the root tree holds only the target:
// with absolute paths it would also carry /tmp's own metadata, which concurrent tests keep changing.
describe('dedup across tools', { timeout: 150_000 }, () => {
  test('restic first, then dmctl: files and a stream add no data blob', async () => {
    const t = freshRepo('restic-first');
    ok(await restic(t, ['init'], { env: TZ }));
    ok(await restic(t, ['backup', path.basename(data)], { env: TZ, cwd: path.dirname(data) }));
    const before1 = await blobCounts(t);
    assert.ok(before1.data >= 10, `expected many data blobs, got ${before1.data}`);

    // --force: no parent, so dmctl really reads and chunks every file
    const s = json<Record<string, number | string>>(ok(await dmctl(t, ['backup', path.basename(data), '--force', '--json'], { env: TZ, cwd: path.dirname(data) })));
    assert.equal(s.totalFilesProcessed, FILES);
    assert.equal(s.filesNew, FILES);
    assert.equal(s.dataBlobs, 0, `dmctl stored ${s.dataBlobs} data blobs restic already had`);
    const after1 = await blobCounts(t);
    assert.equal(after1.data, before1.data);
    // identical nodes, identical trees: the root tree is the one restic wrote
    const snaps = await snapshotsById(t);
    const trees = new Set([...snaps.values()].map((x) => x.tree));
    assert.equal(trees.size, 1, 'dmctl wrote a different tree for the same, unchanged directory');

    ok(await restic(t, ['backup', '--stdin', '--stdin-filename', 'dump.sql'], { env: TZ, input: generatedStream('dedup-stream', STREAM_SIZE) }));
    const before2 = await blobCounts(t);
    const ss = json<Record<string, number | string>>(ok(await dmctl(t, ['backup-stream', '--name', 'dump.sql', '--json'], { env: TZ, input: generatedStream('dedup-stream', STREAM_SIZE) })));
    assert.equal(ss.totalBytesProcessed, STREAM_SIZE);
    assert.equal(ss.dataBlobs, 0, `dmctl stored ${ss.dataBlobs} data blobs of a stream restic already had`);
    assert.equal((await blobCounts(t)).data, before2.data);
    ok(await restic(t, ['check'], { env: TZ }));
  });

  test('dmctl first, then restic: restic adds only tree bytes', async () => {
    const t = freshRepo('dmctl-first');
    ok(await dmctl(t, ['repo', 'init'], { env: TZ }));
    const first = json<Record<string, number>>(ok(await dmctl(t, ['backup', path.basename(data), '--json'], { env: TZ, cwd: path.dirname(data) })));
    assert.ok(first.dataBlobs >= 10);
    const before1 = await blobCounts(t);
    assert.equal(before1.data, first.dataBlobs, 'restic lists a different number of data blobs than dmctl reported');

    const r = resticSummary(jsonLines(ok(await restic(t, ['backup', path.basename(data), '--force', '--json'], { env: TZ, cwd: path.dirname(data) }))));
    assert.equal(r.files_new, FILES);
    assert.equal(r.data_blobs, 0, `restic stored ${r.data_blobs} data blobs dmctl already had`);
    assert.ok(r.data_added < 64 * 1024, `restic added ${r.data_added} bytes (only tree bytes expected)`);
    assert.equal((await blobCounts(t)).data, before1.data);

    const ds = json<Record<string, number>>(ok(await dmctl(t, ['backup-stream', '--name', 'dump.sql', '--json'], { env: TZ, input: generatedStream('dedup-stream', STREAM_SIZE) })));
    assert.ok(ds.dataBlobs > 0);
    const before2 = await blobCounts(t);
    const rs = resticSummary(jsonLines(ok(await restic(t, ['backup', '--stdin', '--stdin-filename', 'dump.sql', '--json'], { env: TZ, input: generatedStream('dedup-stream', STREAM_SIZE) }))));
    assert.equal(rs.total_bytes_processed, STREAM_SIZE);
    assert.equal(rs.data_blobs, 0, `restic stored ${rs.data_blobs} data blobs of a stream dmctl already had`);
    assert.ok(rs.data_added < 16 * 1024, `restic added ${rs.data_added} bytes for a known stream`);
    assert.equal((await blobCounts(t)).data, before2.data);
    ok(await restic(t, ['check'], { env: TZ }));
  });
});

describe('parent snapshot', { timeout: 120_000 }, () => {
  test('an unchanged tree is not stored again; one modified file is the only change', async () => {
    const src = path.join(base, 'parent-src');
    mkdirSync(src);
    for (let i = 0; i < FILES; i++) writeFileSync(path.join(src, `f${i}.bin`), pseudoRandom(`parent/${i}`, (1 + i) << 20));
    mkdirSync(path.join(src, 'sub'));
    writeFileSync(path.join(src, 'sub', 'small.txt'), 'small\n');
    const nFiles = FILES + 1;

    const t = freshRepo('parent');
    ok(await dmctl(t, ['repo', 'init'], { env: TZ }));
    const s1 = json<Record<string, number | string>>(ok(await dmctl(t, ['backup', path.basename(src), '--json'], { env: TZ, cwd: path.dirname(src) })));
    assert.equal(s1.filesNew, nFiles);
    assert.equal(s1.parent, undefined);
    const c1 = await blobCounts(t);

    const s2 = json<Record<string, number | string>>(ok(await dmctl(t, ['backup', path.basename(src), '--json'], { env: TZ, cwd: path.dirname(src) })));
    assert.equal(s2.parent, s1.snapshotId);
    assert.equal(s2.filesUnmodified, nFiles);
    assert.equal(s2.filesNew, 0);
    assert.equal(s2.filesChanged, 0);
    assert.equal(s2.dataBlobs, 0);
    assert.equal(s2.dataAdded, 0, 'an unchanged tree added bytes');
    assert.deepEqual(await blobCounts(t), c1);

    // modify one file (new content, same size, new mtime)
    const changed = path.join(src, 'f2.bin');
    writeFileSync(changed, pseudoRandom('parent/changed', 3 << 20));
    utimesSync(changed, 1_700_000_000, 1_700_000_000);
    const s3 = json<Record<string, number | string>>(ok(await dmctl(t, ['backup', path.basename(src), '--json'], { env: TZ, cwd: path.dirname(src) })));
    assert.equal(s3.parent, s2.snapshotId);
    assert.equal(s3.filesChanged, 1);
    assert.equal(s3.filesUnmodified, nFiles - 1);
    assert.equal(s3.filesNew, 0);
    assert.ok(Number(s3.dataBlobs) >= 1, 'the modified file stored no data');
    // ~3 MiB of random data: at most that many bytes of new chunks (plus trees), not the whole tree
    assert.ok(Number(s3.dataAdded) < (3 << 20) + 64 * 1024, `dataAdded ${s3.dataAdded}`);
    const c3 = await blobCounts(t);
    assert.equal(c3.data, c1.data + Number(s3.dataBlobs));

    // the snapshots record their parents, restic restores the latest state exactly,
    // and restic takes dmctl's latest snapshot as its parent (reads nothing again)
    const snaps = await snapshotsById(t);
    assert.equal(snaps.get(String(s2.snapshotId))!.parent, s1.snapshotId);
    assert.equal(snaps.get(String(s3.snapshotId))!.parent, s2.snapshotId);
    const target = path.join(base, 'parent-restore');
    ok(await restic(t, ['restore', 'latest', '--target', target], { env: TZ }));
    const diff = diffManifests(await treeManifest(src), await treeManifest(path.join(target, path.basename(src))));
    assert.deepEqual(diff, []);
    const r = resticSummary(jsonLines(ok(await restic(t, ['backup', path.basename(src), '--json'], { env: TZ, cwd: path.dirname(src) }))));
    assert.equal(r.files_unmodified, nFiles, `restic re-read files: ${JSON.stringify(r)}`);
    assert.equal(r.data_blobs, 0);
  });
});
