// dmctl forget --keep-last 1 --prune on a repository both tools wrote (two path groups, packs that
// mix kept and removed blobs): restic check --read-data passes afterwards and every kept snapshot
// restores byte for byte with restic and with dmctl.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { promises as fsp, mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { dmctl, ok, restic, toolEnv, json } from '../support/run.js';

const work = mkdtempSync(path.join(os.tmpdir(), 'dmctl-fp-'));

after(async () => {
  await fsp.rm(work, { recursive: true, force: true });
});

async function digestDir(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (d: string, rel: string): Promise<void> => {
    for (const e of await fsp.readdir(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) await walk(p, `${rel}${e.name}/`);
      else if (e.isSymbolicLink()) out.set(rel + e.name, `-> ${await fsp.readlink(p)}`);
      else out.set(rel + e.name, crypto.createHash('sha256').update(await fsp.readFile(p)).digest('hex'));
    }
  };
  await walk(dir, '');
  return out;
}

test('dmctl forget --keep-last 1 --prune: restic check --read-data passes, kept snapshots restore exactly', async () => {
  const t = toolEnv(path.join(work, 'repo'));
  ok(await restic(t, ['init']));
  const dirs = [path.join(work, 'srcA'), path.join(work, 'srcB')];
  for (const d of dirs) {
    await fsp.mkdir(path.join(d, 'x'), { recursive: true });
    for (let i = 0; i < 40; i++) await fsp.writeFile(path.join(d, i % 3 ? 'x' : '', `f${i}`), crypto.randomBytes(10_000 + i * 2_000));
    await fsp.symlink('x/f1', path.join(d, 'link'));
  }
  const state = new Map<string, Map<string, string>>(); // snapshot ID → digest of its source
  const seen = new Set<string>();
  for (let round = 0; round < 6; round++) {
    for (const [di, d] of dirs.entries()) {
      if (round) for (let i = 0; i < 40; i++) if ((i + round + di) % 5 === 0) await fsp.writeFile(path.join(d, i % 3 ? 'x' : '', `f${i}`), crypto.randomBytes(10_000 + i * 2_000));
      const tool = (round + di) % 2 ? restic : dmctl;
      ok(await tool(t, ['backup', '-q', d]));
      const ids = json<{ id: string }[]>(ok(await restic(t, ['snapshots', '--json']))).map((s) => s.id);
      const id = ids.find((x) => !seen.has(x))!;
      seen.add(id);
      state.set(id, await digestDir(d));
    }
  }
  const r = ok(await dmctl(t, ['forget', '--keep-last', '1', '--prune', '--max-unused', '0', '--json']));
  const res = JSON.parse(r.stdout.toString()) as { groups: { keep: { id: string }[]; remove: { id: string }[] }[]; prune: { spaceFreed: number; packsRepacked: number } };
  assert.equal(res.groups.length, 2);
  const kept = res.groups.flatMap((g) => g.keep.map((s) => s.id));
  assert.equal(kept.length, 2);
  assert.equal(res.groups.flatMap((g) => g.remove).length, 10);
  assert.ok(res.prune.spaceFreed > 0);
  assert.ok(res.prune.packsRepacked > 0, 'the fixture must make prune repack');
  const left = json<{ id: string }[]>(ok(await restic(t, ['snapshots', '--json']))).map((s) => s.id).sort();
  assert.deepEqual(left, [...kept].sort());
  ok(await restic(t, ['check', '--read-data']));
  ok(await dmctl(t, ['check', '--read-data']));
  for (const id of kept) {
    const snap = json<{ id: string; paths: string[] }[]>(ok(await restic(t, ['snapshots', '--json', id])))[0];
    for (const tool of [restic, dmctl]) {
      const target = path.join(work, `restore-${id.slice(0, 8)}-${tool === restic ? 'restic' : 'dmctl'}`);
      ok(await tool(t, ['restore', id, '--target', target]));
      assert.deepEqual(await digestDir(path.join(target, snap.paths[0])), state.get(id), `${id.slice(0, 8)} via ${tool === restic ? 'restic' : 'dmctl'}`);
    }
  }
});
