// Closing a pool of worker threads must keep the process alive until the workers are gone. The
// workers are unreferenced while idle (an idle pool must not hold the process open), and
// terminate() of an unreferenced worker does not keep the event loop alive either: a caller
// awaiting close() with nothing else to wait for (restore-stream cleaning up after its reader went
// away) saw the process end there, before its own error was reported, with status 0.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const run = promisify(execFile);
const here = new URL('.', import.meta.url);

/**
 * Runs `body` as an ES module in a fresh process, where nothing but the pool keeps the loop alive
 * (from a file: worker threads inherit the process's flags, and `-e` with --input-type breaks them).
 */
async function alone(body: string): Promise<string> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'dmctl-pool-close-'));
  try {
    const file = path.join(dir, 'main.mjs');
    writeFileSync(file, body);
    const { stdout } = await run(process.execPath, [file], { timeout: 60_000 });
    return stdout;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

for (const kind of ['restore workers (WorkerPool)', 'seal workers (SealPool)'] as const) {
  test(`close() of ${kind} while a job's answer is on its way, with nothing else to do: the code after it runs`, async () => {
    const pool =
      kind === 'seal workers (SealPool)'
        ? `const { SealPool } = await import(${JSON.stringify(new URL('../../src/repository/seal-pool.js', here).href)});
           const pool = SealPool.create(key, 2);
           const job = () => pool.hashShared(new SharedArrayBuffer(64), 0, 64, () => {});`
        : `const { restoreWorkers } = await import(${JSON.stringify(new URL('../../src/restorer/restorer.js', here).href)});
           const pool = restoreWorkers(key);
           const job = () => pool.run({});`;
    // The job is answered while this thread is busy, so the answer is handled after close() has
    // begun: handling it used to unreference the worker being terminated.
    const body = `
      const { newMasterKey } = await import(${JSON.stringify(new URL('../../src/repository/crypto.js', here).href)});
      const key = newMasterKey();
      ${pool}
      if (!pool) throw new Error('no pool');
      job().then(() => {}, (err) => process.stderr.write(String(err) + '\\n'));
      const until = Date.now() + 600;
      while (Date.now() < until);
      await pool.close();
      process.stdout.write('closed\\n');`;
    for (let round = 0; round < 5; round++) assert.equal(await alone(body), 'closed\n', `round ${round}: the process ended inside close()`);
  });
}
