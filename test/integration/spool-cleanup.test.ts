// Temp packs that a killed backup left in the repository are reclaimed by the next writer; those of a
// live process (or recent ones of another host) are left alone.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, existsSync, utimesSync } from 'node:fs';
import { spawn } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { dmctl, ok, toolEnv } from '../support/run.js';

test('stale spooled packs of dead processes are removed, live ones kept', async () => {
  const base = mkdtempSync(path.join(os.tmpdir(), 'dm-spool-'));
  const t = toolEnv(path.join(base, 'repo'));
  ok(await dmctl(t, ['repo', 'init']));
  const host = os.hostname().replace(/[^A-Za-z0-9.]/g, '').slice(0, 64);
  // a PID that is surely gone: a child that already exited
  const dead = spawn('true');
  await new Promise((r) => dead.on('exit', r));
  const spool = path.join(t.repo, 'data', '00');
  const deadFile = path.join(spool, `${host}-${dead.pid}-0123456789abcdef-tmp-dmctl-pack`);
  const liveFile = path.join(spool, `${host}-${process.pid}-0123456789abcdef-tmp-dmctl-pack`);
  const foreignOld = path.join(spool, `otherhost-42-0123456789abcdef-tmp-dmctl-pack`);
  const foreignNew = path.join(spool, `otherhost-43-0123456789abcdef-tmp-dmctl-pack`);
  for (const f of [deadFile, liveFile, foreignOld, foreignNew]) writeFileSync(f, Buffer.alloc(4096, 1));
  const twoDaysAgo = Date.now() / 1000 - 2 * 86400;
  utimesSync(foreignOld, twoDaysAgo, twoDaysAgo);
  ok(await dmctl(t, ['backup-stream', '--name', 'x.txt'], { input: 'some data\n' }));
  // the clean-up runs in the background of the writer; give it a moment after the command ended
  assert.equal(existsSync(deadFile), false, 'leftover of a dead process removed');
  assert.equal(existsSync(foreignOld), false, 'day-old leftover of another host removed');
  assert.equal(existsSync(liveFile), true, 'a live process keeps its temp pack');
  assert.equal(existsSync(foreignNew), true, 'a recent temp pack of another host is kept');
});
