// prune and forget at command level, and prune's crash safety: dmctl prune killed with SIGKILL at
// random moments (real repack work: packs mixing kept and removed blobs) must never leave a kept
// snapshot unrestorable; `restic unlock` + `restic check` pass after every kill, and the next prune
// finishes the job.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { promises as fsp, mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { dmctl, ok, restic, toolEnv, json, type ToolEnv } from '../support/run.js';
import { LocalBackend } from '../../src/storage/local.js';
import { Repository } from '../../src/repository/repository.js';

async function digestDir(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (d: string, rel: string): Promise<void> => {
    for (const e of await fsp.readdir(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) await walk(p, `${rel}${e.name}/`);
      else out.set(rel + e.name, crypto.createHash('sha256').update(await fsp.readFile(p)).digest('hex'));
    }
  };
  await walk(dir, '');
  return out;
}

const work = mkdtempSync(path.join(os.tmpdir(), 'dmctl-prune-'));
const src = path.join(work, 'src');
let base: ToolEnv;
/** Snapshot ID → digest of the source at backup time (kept snapshots only). */
const kept = new Map<string, Map<string, string>>();
const forgotten: string[] = [];

async function write(name: string, size: number): Promise<void> {
  await fsp.writeFile(path.join(src, name), crypto.randomBytes(size));
}

before(async () => {
  base = toolEnv(path.join(work, 'base'));
  await fsp.mkdir(path.join(src, 'sub'), { recursive: true });
  ok(await dmctl(base, ['repo', 'init']));
  // Many files per pack, so removing a snapshot leaves packs partly used.
  for (let i = 0; i < 60; i++) await write(`f${i}`, 30_000 + i * 1_500);
  for (let i = 0; i < 4; i++) await write(`sub/big${i}`, 400_000);
  const ids: string[] = [];
  for (let s = 0; s < 6; s++) {
    if (s > 0) {
      for (let i = 0; i < 60; i++) if ((i * 7 + s) % 4 === 0) await write(`f${i}`, 30_000 + i * 1_500);
      await write(`sub/big${s % 4}`, 400_000);
    }
    const tool = s % 2 === 0 ? dmctl : restic;
    ok(await tool(base, ['backup', '-q', src]));
    const snaps = json<{ id: string; time: string }[]>(ok(await dmctl(base, ['snapshots', '--json'])));
    const id = snaps.map((x) => x.id).find((x) => !ids.includes(x))!;
    ids.push(id);
    if (s % 2 === 0) forgotten.push(id);
    else kept.set(id, await digestDir(src));
  }
  // Forget half of the snapshots by ID (dmctl's IDs mode), prune comes later.
  ok(await dmctl(base, ['forget', ...forgotten.map((i) => i.slice(0, 10))]));
});

after(async () => {
  await fsp.rm(work, { recursive: true, force: true });
});

async function copyRepo(name: string): Promise<ToolEnv> {
  const t = toolEnv(path.join(work, name), base.password, base.home);
  await fsp.cp(base.repo, t.repo, { recursive: true });
  return t;
}

async function assertKeptRestore(t: ToolEnv, label: string): Promise<void> {
  for (const [id, digest] of kept) {
    const target = path.join(work, `restore-${crypto.randomBytes(4).toString('hex')}`);
    ok(await restic(t, ['restore', id, '--target', target]));
    const got = await digestDir(path.join(target, src));
    assert.deepEqual(got, digest, `${label}: snapshot ${id.slice(0, 8)} restores differently`);
    await fsp.rm(target, { recursive: true, force: true });
  }
}

test('forget: IDs mode removed exactly those snapshots; --dry-run and --json shape', async () => {
  const t = await copyRepo('forget');
  const before = json<{ id: string }[]>(ok(await dmctl(t, ['snapshots', '--json']))).map((s) => s.id).sort();
  assert.deepEqual(before, [...kept.keys()].sort());
  // --dry-run --json: restic's group shape, and nothing deleted.
  const plan = json<Record<string, unknown>[]>(ok(await dmctl(t, ['forget', '--keep-last', '1', '--dry-run', '--json'])));
  assert.equal(plan.length, 1);
  assert.deepEqual(Object.keys(plan[0]), ['tags', 'host', 'paths', 'keep', 'remove', 'reasons']);
  assert.deepEqual(plan[0].paths, [src]);
  const keep = plan[0].keep as { id: string; short_id: string }[];
  const remove = plan[0].remove as { id: string }[];
  assert.equal(keep.length, 1);
  assert.equal(remove.length, 2);
  assert.equal(keep[0].short_id, keep[0].id.slice(0, 8));
  assert.deepEqual((plan[0].reasons as { matches: string[] }[])[0].matches, ['last snapshot']);
  const after1 = json<{ id: string }[]>(ok(await dmctl(t, ['snapshots', '--json']))).map((s) => s.id).sort();
  assert.deepEqual(after1, before, '--dry-run deleted something');
  // The same policy for real removes exactly the planned ones.
  ok(await dmctl(t, ['forget', '--keep-last', '1']));
  const after2 = json<{ id: string }[]>(ok(await dmctl(t, ['snapshots', '--json']))).map((s) => s.id);
  assert.deepEqual(after2, [keep[0].id]);
  // An unknown ID is an error, both a policy and IDs is a usage error.
  const bad = await dmctl(t, ['forget', 'ffffffffff']);
  assert.notEqual(bad.code, 0);
  const both = await dmctl(t, ['forget', keep[0].id, '--keep-last', '1']);
  assert.equal(both.code, 2);
});

test('prune --dry-run changes nothing and plans repacking; prune --json reports spaceFreed', async () => {
  const t = await copyRepo('dry');
  const list = async () => (await fsp.readdir(path.join(t.repo, 'data'), { recursive: true })).sort();
  const before = await list();
  const plan = json<{ dryRun: boolean; spaceFreed: number; packsRepacked: number; plan: { repack: string[] } }>(
    ok(await dmctl(t, ['prune', '--dry-run', '--max-unused', '0', '--json'])),
  );
  assert.equal(plan.dryRun, true);
  assert.ok(plan.packsRepacked > 0, 'the fixture must need repacking');
  assert.ok(plan.spaceFreed > 0);
  assert.deepEqual(await list(), before);
  // The JSON result has the bytes and a human string; the real prune prints the Kanister phase output.
  assert.match((plan as unknown as { spaceFreedHuman: string }).spaceFreedHuman, /[KM]iB$/);
  const r = ok(await dmctl(t, ['prune', '--max-unused', '0', '--output-name', 'spaceFreed']));
  const lines = r.stdout.toString('utf8').split('\n');
  assert.ok(lines.includes(`###Phase-output###: {"key":"spaceFreed","value":"${plan.spaceFreed} B"}`), lines.join('\n'));
  for (const id of plan.plan.repack) assert.ok(!(await list()).some((p) => p.endsWith(id)), `repacked pack ${id} still there`);
  ok(await restic(t, ['check', '--read-data']));
  await assertKeptRestore(t, 'after prune');
  // Nothing left to do: a second prune frees nothing.
  const again = json<{ spaceFreed: number }>(ok(await dmctl(t, ['prune', '--max-unused', '0', '--json'])));
  assert.equal(again.spaceFreed, 0);
});

test('prune killed with SIGKILL at random moments never loses a kept blob (20 trials)', async () => {
  // How long an uninterrupted prune takes, to spread the kills over its whole run.
  const probe = await copyRepo('probe');
  const full = ok(await dmctl(probe, ['prune', '--max-unused', '0']));
  // The first run is often the slowest (cold caches, a loaded machine): the window follows the fastest uninterrupted
  // run seen so far, so that a slow probe does not let most trials finish before their kill.
  let duration = full.durationMs;
  let killed = 0;
  for (let i = 0; i < 20; i++) {
    const t = await copyRepo(`trial${i}`);
    // Startup (~0.3 s) included: kills land from before the lock to the last delete.
    // Kill somewhere between start-up and 90% of a normal run (prune takes only ~1 s now, so a
    // window reaching past its end let half of the runs finish before the kill).
    const delay = Math.floor(100 + Math.random() * Math.max(100, duration * 0.9 - 100));
    const r = await dmctl(t, ['prune', '--max-unused', '0'], { timeoutMs: delay });
    if (r.signal === 'SIGKILL') killed++;
    else duration = Math.min(duration, ok(r).durationMs);
    ok(await restic(t, ['unlock']));
    const chk = await restic(t, ['check']);
    assert.equal(chk.code, 0, `trial ${i} (kill after ${delay} ms): restic check failed:\n${chk.stderr}${chk.stdout}`);
    await assertKeptRestore(t, `trial ${i} (kill after ${delay} ms)`);
    // The next prune finishes the job: afterwards no pack is unreferenced or holds unused blobs.
    ok(await dmctl(t, ['prune', '--max-unused', '0']));
    const repo = await Repository.open(new LocalBackend(t.repo), t.password);
    await repo.loadIndex();
    const packs = await repo.list('data');
    await repo.backend.close();
    assert.deepEqual(packs.filter((p) => !repo.index.packs.has(p)), [], `trial ${i}: unreferenced packs left`);
    assert.equal(repo.index.packs.size, packs.length, `trial ${i}: the index names missing packs`);
    ok(await restic(t, ['check']));
    await fsp.rm(t.repo, { recursive: true, force: true });
  }
  assert.ok(killed >= 12, `only ${killed} of 20 prunes were killed before finishing (duration ${duration} ms)`);
  await assertKeptRestore(probe, 'uninterrupted prune');
});
