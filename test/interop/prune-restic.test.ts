// dmctl prune and restic prune on each other's repositories: both leave them consistent for both
// checkers; and dmctl's prune plan equals restic 0.14's (blob and pack counts for several
// --max-unused / --max-repack-size settings).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { promises as fsp, mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { dmctl, ok, restic, toolEnv, json, type ToolEnv } from '../support/run.js';

const work = mkdtempSync(path.join(os.tmpdir(), 'dmctl-pr-'));

after(async () => {
  await fsp.rm(work, { recursive: true, force: true });
});

/** A history with partly used packs: one big first backup, then changes to a few files each time. */
async function history(t: ToolEnv, writer: 'dmctl' | 'restic' | 'both', name: string): Promise<void> {
  const src = path.join(work, name);
  await fsp.mkdir(src, { recursive: true });
  for (let i = 0; i < 50; i++) await fsp.writeFile(path.join(src, `f${i}`), crypto.randomBytes(15_000 + i * 1_000));
  for (let s = 0; s < 6; s++) {
    if (s) for (let i = 0; i < 20; i++) if ((i * 3 + s) % 5 === 0) await fsp.writeFile(path.join(src, `f${i}`), crypto.randomBytes(15_000 + i * 1_000));
    const tool = writer === 'dmctl' || (writer === 'both' && s % 2 === 0) ? dmctl : restic;
    ok(await tool(t, ['backup', '-q', src]));
  }
  ok(await restic(t, ['forget', '-q', '--keep-last', '2']));
}

async function bothChecks(t: ToolEnv, label: string): Promise<void> {
  const r = await restic(t, ['check', '--read-data']);
  assert.equal(r.code, 0, `${label}: restic check: ${r.stderr}${r.stdout}`);
  const d = await dmctl(t, ['check', '--read-data']);
  assert.equal(d.code, 0, `${label}: dmctl check: ${d.stdout}${d.stderr}`);
}

test('restic prune on a dmctl-written repository', async () => {
  const t = toolEnv(path.join(work, 'dm'));
  ok(await dmctl(t, ['repo', 'init']));
  await history(t, 'dmctl', 'src-dm');
  const r = ok(await restic(t, ['prune', '--max-unused', '0']));
  assert.match(r.stdout.toString(), /repacking packs/);
  await bothChecks(t, 'after restic prune');
});

test('dmctl prune on a restic-written repository', async () => {
  const t = toolEnv(path.join(work, 'rs'));
  ok(await restic(t, ['init']));
  await history(t, 'restic', 'src-rs');
  const r = json<{ packsRepacked: number }>(ok(await dmctl(t, ['prune', '--max-unused', '0', '--json'])));
  assert.ok(r.packsRepacked > 0);
  await bothChecks(t, 'after dmctl prune');
  // restic finds nothing left to do.
  const again = ok(await restic(t, ['prune', '--dry-run', '-v', '--max-unused', '0'])).stdout.toString();
  assert.match(again, /to repack: +0 blobs/);
  assert.match(again, /to delete: +0 blobs/);
});

/** restic's `prune --dry-run -v` numbers. */
function resticPlan(out: string): Record<string, number> {
  const num = (re: RegExp) => {
    const m = re.exec(out);
    assert.ok(m, `${re} not in restic output:\n${out}`);
    return Number(m[1]);
  };
  return {
    repackBlobs: num(/^to repack: +(\d+) blobs/m),
    repackrmBlobs: num(/^this removes: +(\d+) blobs/m),
    removeBlobs: num(/^to delete: +(\d+) blobs/m),
    keepPacks: num(/^to keep: +(\d+) packs/m),
    repackPacks: num(/^to repack: +(\d+) packs/m),
    removePacks: num(/^to delete: +(\d+) packs/m),
  };
}

test('the prune plan equals restic 0.14 for several limits', async () => {
  const t = toolEnv(path.join(work, 'plan'));
  ok(await dmctl(t, ['repo', 'init']));
  await history(t, 'both', 'src-plan');
  let repacked = 0;
  for (const args of [[], ['--max-unused', '0'], ['--max-unused', '10%'], ['--max-unused', '50k'], ['--max-unused', 'unlimited'], ['--max-unused', '0', '--max-repack-size', '300k'], ['--repack-small']]) {
    const want = resticPlan(ok(await restic(t, ['prune', '--dry-run', '-v', ...args])).stdout.toString());
    const got = json<{ stats: { blobs: Record<string, number>; packs: Record<string, number> } }>(ok(await dmctl(t, ['prune', '--dry-run', '--json', ...args]))).stats;
    assert.deepEqual(
      { repackBlobs: got.blobs.repack, repackrmBlobs: got.blobs.repackrm, removeBlobs: got.blobs.remove, keepPacks: got.packs.keep, repackPacks: got.packs.repack, removePacks: got.packs.remove },
      want,
      `prune ${args.join(' ')}`,
    );
    repacked += want.repackPacks;
  }
  assert.ok(repacked > 0, 'some setting must repack');
});
