// dmctl and the real restic 0.14 on one S3 server (Ceph radosgw), both ways, and faults:
//  1. dmctl writes a repository to radosgw; `restic -r s3:…` passes check --read-data, restores the
//     awkward tree byte for byte and dumps the stream.
//  2. restic writes a repository there; dmctl lists the same snapshots (snapshots --json equal to
//     restic's), restores the tree, restore-streams the stream and checks it.
//  3. Through a loopback proxy that delays, resets and answers 500/503 to a share of requests, a
//     dmctl backup and restore still give identical bytes; once the proxy answers 503 to everything
//     in the middle of a backup (and of a restore), dmctl stops with one line naming the backend and
//     the operation, exit 4, and with the proxy healthy again restic checks the repository.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { mkdtempSync, rmSync, promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { diffManifests, goLossyUtf8, makeAwkwardTree, pseudoRandom, treeManifest, type Manifest } from '../support/fixtures.js';
import { dmctl, json, ok, restic, toolEnv, type RunResult, type ToolEnv } from '../support/run.js';
import { dmctlPipe, oneErrorLine } from '../support/proc.js';
import { startRadosgw, type RadosgwServer } from '../support/servers.js';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.js';
import { EXIT_CODES } from '../../src/core/errors.js';

const TZ = { TZ: 'Europe/Berlin' };
const STREAM_SIZE = 24 << 20;
const PW = 's3-interop-pw';

let base = '';
let src = '';
let srcManifest: Manifest;
let rgw: RadosgwServer;

before(async () => {
  assert.equal(process.getuid?.(), 0, 'these tests need root (owners, device nodes)');
  base = mkdtempSync(path.join(os.tmpdir(), 'dmctl-s3-restic-'));
  src = path.join(base, 'src');
  const started = startRadosgw();
  makeAwkwardTree(src);
  srcManifest = await treeManifest(src);
  rgw = await started;
}, { timeout: 400_000 });

after(async () => {
  await rgw?.stop();
  if (base) rmSync(base, { recursive: true, force: true });
});

/** A tool environment for an S3 location; credentials in the AWS_* variables both tools read. */
function s3Env(url: string, tag: string): ToolEnv {
  return toolEnv(url, PW, mkdtempSync(path.join(base, `home-${tag}-`)));
}
const awsEnv = (): Record<string, string | undefined> => ({
  ...TZ,
  AWS_ACCESS_KEY_ID: rgw.accessKeyId,
  AWS_SECRET_ACCESS_KEY: rgw.secretAccessKey,
  AWS_PROFILE: undefined,
  AWS_SESSION_TOKEN: undefined,
});
const dm = (t: ToolEnv, args: string[], extra: Record<string, string | undefined> = {}) => dmctl(t, args, { env: { ...awsEnv(), ...extra }, timeoutMs: 180_000 });
const rs = (t: ToolEnv, args: string[]) => restic(t, args, { env: awsEnv(), timeoutMs: 180_000 });
const show = (r: RunResult) => `${r.command} → ${r.code ?? r.signal}\n${r.stderr.slice(-3000)}`;

function assertSameTree(actual: Manifest, how: string, mtimeResolutionNs: bigint): void {
  // Link targets pass through a Go string: invalid UTF-8 becomes U+FFFD for both tools.
  const diff = diffManifests(srcManifest, actual, { linkTarget: goLossyUtf8, mtimeResolutionNs });
  assert.deepEqual(diff, [], `${how} did not reproduce the tree:\n${diff.join('\n')}`);
}

/** Runs a command whose stdout is a stream; returns its SHA-256 and size. */
async function hashed(runIt: (onStdout: (b: Buffer) => void) => Promise<RunResult>): Promise<{ sha: string; size: number; r: RunResult }> {
  const h = crypto.createHash('sha256');
  let size = 0;
  const r = await runIt((b) => {
    h.update(b);
    size += b.length;
  });
  return { sha: h.digest('hex'), size, r };
}

/** gen-stream.mjs SIZE --seed S | dmctl backup-stream; returns the stream's SHA-256 and dmctl's summary. */
async function dmctlStream(t: ToolEnv, name: string, seed: string, size = STREAM_SIZE): Promise<{ sha: string; summary: Record<string, unknown> }> {
  const shaFile = path.join(base, `gen-${seed}.sha256`);
  const r = await dmctlPipe(t, ['backup-stream', '--name', name, '--json'], { gen: [String(size), '--seed', seed, '--sha256-file', shaFile], env: awsEnv() });
  assert.equal(r.code, 0, r.stderr);
  return { sha: (await fsp.readFile(shaFile, 'utf8')).trim(), summary: JSON.parse(r.stdout.toString()) as Record<string, unknown> };
}

describe('dmctl writes to radosgw, restic reads', { timeout: 240_000 }, () => {
  test('restic check --read-data passes, restic restores the tree byte for byte and dumps the stream', async () => {
    const t = s3Env(`s3:${rgw.endpoint}/interop/dmctl-wrote`, 'dm');
    const init = await dm(t, ['repo', 'init']);
    assert.equal(init.code, 0, show(init));
    const b = await dm(t, ['backup', src, '--json']);
    assert.equal(b.code, 0, show(b));
    const summary = json<Record<string, unknown>>(b);
    assert.deepEqual(summary.errors, []);
    const stream = await dmctlStream(t, 'db/dump.sql', 'dm-stream');

    const check = ok(await rs(t, ['check', '--read-data']));
    assert.match(check.stdout.toString(), /no errors were found/);

    const snaps = json<Array<Record<string, unknown>>>(ok(await rs(t, ['snapshots', '--json'])));
    assert.deepEqual(snaps.map((s) => s.id).sort(), [summary.snapshotId, stream.summary.snapshotId].sort());

    const target = path.join(base, 'restic-restore-of-dmctl');
    ok(await rs(t, ['restore', String(summary.snapshotId), '--target', target]));
    assertSameTree(await treeManifest(path.join(target, src)), 'restic restore from radosgw', 1n);
    rmSync(target, { recursive: true, force: true });

    const dump = await hashed((onStdout) => restic(t, ['dump', String(stream.summary.snapshotId), '/db/dump.sql'], { env: awsEnv(), onStdout }));
    assert.equal(dump.r.code, 0, show(dump.r));
    assert.equal(dump.size, STREAM_SIZE);
    assert.equal(dump.sha, stream.sha);
  });
});

describe('restic writes to radosgw, dmctl reads', { timeout: 240_000 }, () => {
  test('dmctl lists restic\'s snapshots as restic does, restores the tree and the stream, and checks', async () => {
    const t = s3Env(`s3:${rgw.endpoint}/interop/restic-wrote`, 'rs');
    ok(await rs(t, ['init', '--repository-version', '2']));
    ok(await rs(t, ['backup', src, '--host', 'restic-host', '--tag', 'tree']));
    const streamData = pseudoRandom('restic-stream', STREAM_SIZE);
    const streamSha = crypto.createHash('sha256').update(streamData).digest('hex');
    ok(await restic(t, ['backup', '--stdin', '--stdin-filename', 'dump.bin', '--host', 'restic-host'], { env: awsEnv(), input: streamData }));

    const theirs = json<Array<Record<string, unknown>>>(ok(await rs(t, ['snapshots', '--json'])));
    const ours = json<Array<Record<string, unknown>>>(ok(await dm(t, ['snapshots', '--json'])));
    assert.equal(theirs.length, 2);
    assert.deepEqual(ours, theirs);

    const treeSnap = theirs.find((s) => (s.tags as string[] | undefined)?.includes('tree'))!;
    const streamSnap = theirs.find((s) => s !== treeSnap)!;
    const target = path.join(base, 'dmctl-restore-of-restic');
    const r = await dm(t, ['restore', String(treeSnap.id), '--target', target, '--verify']);
    assert.equal(r.code, 0, show(r));
    // dmctl sets times through libuv: whole microseconds
    assertSameTree(await treeManifest(path.join(target, src)), 'dmctl restore from radosgw', 1000n);
    rmSync(target, { recursive: true, force: true });

    const out = await hashed((onStdout) => dmctl(t, ['restore-stream', String(streamSnap.short_id)], { env: awsEnv(), onStdout }));
    assert.equal(out.r.code, 0, show(out.r));
    assert.equal(out.size, STREAM_SIZE);
    assert.equal(out.sha, streamSha);

    const c = await dm(t, ['check', '--read-data']);
    assert.equal(c.code, 0, show(c));
  });
});

describe('faults between dmctl and radosgw', { timeout: 300_000 }, () => {
  let proxy: FaultProxy;
  const bucketPath = (p: string) => `s3:${rgw.endpoint}/faults/${p}`;
  const viaProxy = (p: string) => `s3:${proxy.url}/faults/${p}`;
  before(async () => {
    proxy = await startFaultProxy(rgw.endpoint, {}, 7);
  });
  after(async () => proxy?.stop());

  test('backup, backup-stream, restore and restore-stream through delays, resets and 500/503 give identical bytes', async (ctx) => {
    const direct = s3Env(bucketPath('flaky'), 'flaky');
    ok(await dm(direct, ['repo', 'init']));
    const t: ToolEnv = { ...direct, repo: viaProxy('flaky') };
    proxy.plan = { reset: 0.04, resetMidBody: 0.04, error500: 0.04, error503: 0.06, delay: 0.08, delayMs: 150 };
    const faultsBefore = proxy.stats.resets + proxy.stats.errors;

    const b = await dm(t, ['backup', '-q', src]);
    assert.equal(b.code, 0, show(b));
    const stream = await dmctlStream(t, 'flaky.bin', 'flaky-stream', 12 << 20);
    const snaps = json<Array<{ id: string; paths: string[] }>>(ok(await dm(t, ['snapshots', '--json'])));
    assert.equal(snaps.length, 2);
    const treeSnap = snaps.find((s) => s.paths[0] === src)!;

    const target = path.join(base, 'restore-through-faults');
    const r = await dm(t, ['restore', treeSnap.id, '--target', target, '--verify']);
    assert.equal(r.code, 0, show(r));
    assertSameTree(await treeManifest(path.join(target, src)), 'dmctl restore through the fault proxy', 1000n);
    rmSync(target, { recursive: true, force: true });
    const out = await hashed((onStdout) => dmctl(t, ['restore-stream', String(stream.summary.snapshotId)], { env: awsEnv(), onStdout }));
    assert.equal(out.r.code, 0, show(out.r));
    assert.equal(out.sha, stream.sha);

    const injected = proxy.stats.resets + proxy.stats.errors - faultsBefore;
    ctx.diagnostic(`proxy: ${JSON.stringify(proxy.stats)}; seconds: backup ${b.durationMs / 1000}, restore ${r.durationMs / 1000}, restore-stream ${out.r.durationMs / 1000}`);
    assert.ok(injected >= 10, `the proxy injected faults (${JSON.stringify(proxy.stats)})`);
    proxy.plan = {};
    const check = ok(await rs(direct, ['check', '--read-data']));
    assert.match(check.stdout.toString(), /no errors were found/);
  });

  /** Switches the proxy to "503 to everything" once a request matching `when` passed through. */
  function breakAfter(when: (method: string, url: string) => boolean): () => void {
    const seen = proxy.recorded.length;
    const timer = setInterval(() => {
      if (proxy.recorded.slice(seen).some((r) => when(r.method, r.url))) {
        proxy.plan = { error503: 1 };
        clearInterval(timer);
      }
    }, 2);
    return () => clearInterval(timer);
  }

  test('when the retry budget is spent: one line naming the backend and operation, exit 4; restic check passes afterwards', async (ctx) => {
    const direct = s3Env(bucketPath('broken'), 'broken');
    ok(await dm(direct, ['repo', 'init']));
    const first = await dmctlStream(direct, 'first.bin', 'broken-first', 4 << 20);
    const t: ToolEnv = { ...direct, repo: viaProxy('broken') };
    const location = t.repo.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

    // backup: the first pack upload goes through, then the server "fails" for good
    proxy.plan = {};
    const stop = breakAfter((m, u) => m === 'PUT' && u.includes('/data/'));
    const started = Date.now();
    const r = await dmctlPipe(t, ['backup-stream', '--name', 'broken.bin'], { gen: ['60M', '--seed', 'broken'], env: awsEnv() });
    stop();
    assert.equal(r.code, EXIT_CODES.STORAGE, `exit code; stderr: ${r.stderr}`);
    const msg = oneErrorLine(r.stderr);
    ctx.diagnostic(`backup-stream: ${msg}`);
    assert.match(msg, new RegExp(`^${location}: (saving|loading|stat|listing|removing) [a-z]+(/[0-9a-f]{16}…)? failed after \\d+ attempts.*(503|SlowDown)`), msg);
    assert.ok(!r.stderr.includes(rgw.secretAccessKey), 'no secret in the message');
    assert.ok(Date.now() - started < 120_000, 'gave up in reasonable time');

    // restore: the snapshot loads, then every request gets 503 (the snapshot is read while the lock
    // is being taken, so the request that fails for good may be the lock's)
    proxy.plan = {};
    const stop2 = breakAfter((m, u) => m === 'GET' && u.includes('/snapshots/'));
    const target = path.join(base, 'restore-broken');
    const r2 = await dm(t, ['restore', 'latest', '--target', target]);
    stop2();
    assert.equal(r2.code, EXIT_CODES.STORAGE, show(r2));
    const msg2 = oneErrorLine(r2.stderr);
    ctx.diagnostic(`restore: ${msg2}`);
    assert.match(msg2, new RegExp(`^${location}: (loading|listing|stat|saving) [a-z]+(/[0-9a-f]{16}…)? failed after \\d+ attempts.*(503|SlowDown)`));
    rmSync(target, { recursive: true, force: true });

    // healthy again: the repository is consistent (stale locks of the dead processes aside)
    proxy.plan = {};
    ok(await rs(direct, ['unlock']));
    const check = ok(await rs(direct, ['check', '--read-data']));
    assert.match(check.stdout.toString(), /no errors were found/);
    const snaps = json<Array<{ paths: string[] }>>(ok(await rs(direct, ['snapshots', '--json'])));
    assert.deepEqual(snaps.map((s) => s.paths[0]), ['/first.bin'], 'the failed backup wrote no snapshot');
    const back = await hashed((onStdout) => restic(direct, ['dump', 'latest', '/first.bin'], { env: awsEnv(), onStdout }));
    assert.equal(back.sha, first.sha);
  });
});
