// key list|add|remove|passwd against the real restic 0.14: keys dmctl adds open the repository for
// restic and the other way round; a removed key opens nothing; the key in use cannot be removed.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp, mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { dmctl, ok, restic, toolEnv, json, type ToolEnv } from '../support/run.js';

const work = mkdtempSync(path.join(os.tmpdir(), 'dmctl-keys-'));
let t: ToolEnv;

async function pwFile(name: string, pw: string): Promise<string> {
  const p = path.join(work, name);
  await fsp.writeFile(p, `${pw}\n`);
  return p;
}

const as = (pw: string) => ({ env: { DM_PASSWORD: pw } });
const asRestic = (pw: string) => ({ env: { RESTIC_PASSWORD: pw } });

interface Key { id: string; current: boolean; username: string; hostname: string; created: string }

before(async () => {
  t = toolEnv(path.join(work, 'repo'), 'first-pw');
  ok(await dmctl(t, ['repo', 'init']));
});

after(async () => {
  await fsp.rm(work, { recursive: true, force: true });
});

test('key add: the new password opens the repository for dmctl and restic; list marks the key in use', async () => {
  const add = json<{ id: string }>(ok(await dmctl(t, ['key', 'add', '--new-password-file', await pwFile('second', 'second-pw'), '--user', 'alice', '--host', 'laptop', '--json'])));
  assert.match(add.id, /^[0-9a-f]{64}$/);
  const asFirst = json<Key[]>(ok(await dmctl(t, ['key', 'list', '--json'])));
  assert.equal(asFirst.length, 2);
  assert.deepEqual(asFirst.filter((k) => k.current).map((k) => k.id).length, 1);
  assert.notEqual(asFirst.find((k) => k.current)!.id, add.id);
  const added = asFirst.find((k) => k.id === add.id)!;
  assert.equal(added.username, 'alice');
  assert.equal(added.hostname, 'laptop');
  const asSecond = json<Key[]>(ok(await dmctl(t, ['key', 'list', '--json'], as('second-pw'))));
  assert.equal(asSecond.find((k) => k.current)!.id, add.id);
  ok(await restic(t, ['snapshots'], asRestic('second-pw')));
  // A wrong password still opens nothing.
  assert.equal((await dmctl(t, ['key', 'list'], as('nope'))).code, 12);
  // Human list: the current key has a star.
  const human = ok(await dmctl(t, ['key', 'list'], as('second-pw'))).stdout.toString();
  assert.ok(human.includes(`*${add.id.slice(0, 8)}`), human);
});

test('key remove: refuses the key in use; a removed key no longer opens', async () => {
  const keys = json<Key[]>(ok(await dmctl(t, ['key', 'list', '--json'])));
  const current = keys.find((k) => k.current)!;
  const other = keys.find((k) => !k.current)!;
  const refuse = await dmctl(t, ['key', 'remove', current.id.slice(0, 8)]);
  assert.equal(refuse.code, 2, refuse.stderr);
  assert.match(refuse.stderr, /currently used/);
  assert.equal(json<Key[]>(ok(await dmctl(t, ['key', 'list', '--json']))).length, 2);
  ok(await dmctl(t, ['key', 'remove', other.id.slice(0, 10)]));
  assert.equal((await dmctl(t, ['key', 'list'], as('second-pw'))).code, 12);
  assert.notEqual((await restic(t, ['snapshots'], asRestic('second-pw'))).code, 0);
  assert.equal((await dmctl(t, ['key', 'remove', 'abcdef0123'])).code, 1);
});

test('key passwd: the new password works, the old one does not', async () => {
  const r = json<{ added: string; removed: string }>(ok(await dmctl(t, ['key', 'passwd', '--new-password-file', await pwFile('third', 'third-pw'), '--json'])));
  assert.notEqual(r.added, r.removed);
  assert.equal((await dmctl(t, ['key', 'list'], as('first-pw'))).code, 12);
  const keys = json<Key[]>(ok(await dmctl(t, ['key', 'list', '--json'], as('third-pw'))));
  assert.deepEqual(keys.map((k) => k.id), [r.added]);
  ok(await restic(t, ['snapshots'], asRestic('third-pw')));
  t.password = 'third-pw';
});

test('a key restic added opens the repository for dmctl, and dmctl can remove it', async () => {
  ok(await restic(t, ['key', 'add', '--new-password-file', await pwFile('restic', 'restic-pw')]));
  const asRestic2 = json<Key[]>(ok(await dmctl(t, ['key', 'list', '--json'], as('restic-pw'))));
  const resticKey = asRestic2.find((k) => k.current)!;
  ok(await dmctl(t, ['key', 'remove', resticKey.id]));
  assert.equal((await dmctl(t, ['key', 'list'], as('restic-pw'))).code, 12);
  assert.notEqual((await restic(t, ['snapshots'], asRestic('restic-pw'))).code, 0);
});

test('key add without a new password off a terminal is a usage error; an empty file is refused', async () => {
  const r = await dmctl(t, ['key', 'add']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /new-password-file/);
  const empty = path.join(work, 'empty');
  await fsp.writeFile(empty, '  \n');
  assert.equal((await dmctl(t, ['key', 'add', '--new-password-file', empty])).code, 2);
});
