// restore-stream's pipeline: a stream far longer than its two shared rings (16 + 32 MiB) is read a
// run of blobs at a time, decoded by the worker threads into the output ring and written in order.
// The bytes must come back exactly whatever the output: a file stream (written from the ring), and
// a writable that keeps every chunk it is given (which must get copies: were it given views of the
// ring, later runs would overwrite what it kept). A flipped bit in the middle names its pack, and
// what was written before it is an exact prefix.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { createWriteStream, mkdtempSync, promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { LocalBackend } from '../../src/storage/local.js';
import { Repository } from '../../src/repository/repository.js';
import { backupStream } from '../../src/archiver/stream.js';
import { dumpFile } from '../../src/restorer/dump.js';
import { IntegrityError } from '../../src/core/errors.js';
import { treeAt } from '../../src/restorer/restorer.js';
import { findSnapshot } from '../../src/repository/snapshots.js';
import { flipPackBit } from '../support/fixtures.js';

const work = mkdtempSync(path.join(os.tmpdir(), 'dmctl-dump-pipeline-'));
after(() => fsp.rm(work, { recursive: true, force: true }));

/** ~96 MB: text-like runs (compressed several times over) alternating with random ones (stored as they are). */
function streamData(): Buffer {
  const parts: Buffer[] = [];
  let n = 0;
  for (let i = 0; n < 96 * 1024 * 1024; i++) {
    const len = 300_000 + ((i * 7919) % 2_500_000);
    const part = i % 3 === 2 ? crypto.randomBytes(len) : Buffer.from(`row ${i},${crypto.randomBytes(6).toString('hex')},payload;`.repeat(Math.ceil(len / 40)).slice(0, len));
    parts.push(part);
    n += len;
  }
  return Buffer.concat(parts);
}

const sha = (b: Uint8Array) => crypto.createHash('sha256').update(b).digest('hex');

test('a stream longer than the rings comes back exactly, to a file and to a writable that keeps its chunks; damage names the pack', async () => {
  const data = streamData();
  const repoDir = path.join(work, 'repo');
  const repo = await Repository.init(new LocalBackend(repoDir), 'pw');
  await backupStream(repo, { name: 'db.sql', input: Readable.from([data.subarray(0, 40e6), data.subarray(40e6)]), host: 'h' });
  assert.ok((await fsp.readdir(path.join(repoDir, 'data'))).length > 0);

  // A file stream: written straight from the output ring.
  const file = path.join(work, 'out.sql');
  const out = createWriteStream(file);
  const r1 = await dumpFile(repo, { snapshot: 'latest', name: 'db.sql', output: out });
  await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
  assert.equal(r1.bytes, data.length);
  assert.equal(sha(await fsp.readFile(file)), sha(data));

  // A writable that keeps references to its chunks.
  const kept: Buffer[] = [];
  const keeper = new Writable({
    write(chunk: Buffer, _enc, cb) {
      kept.push(chunk);
      cb();
    },
  });
  const r2 = await dumpFile(repo, { snapshot: 'latest', name: 'db.sql', output: keeper });
  assert.equal(r2.bytes, data.length);
  assert.ok(kept.length > 3, `written in several chunks (${kept.length})`);
  assert.equal(sha(Buffer.concat(kept)), sha(data));

  // Damage a blob in the middle of the stream.
  const fresh = await Repository.open(new LocalBackend(repoDir), 'pw');
  await fresh.ensureIndex();
  const content = await streamContent(fresh);
  const mid = content[Math.floor(content.length / 2)]!;
  const loc = fresh.index.lookup('data', mid)!;
  await flipPackBit(repoDir, loc.packId, loc.offset + Math.floor(loc.length / 2));
  const got: Buffer[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      got.push(Buffer.from(chunk));
      cb();
    },
  });
  const damaged = await Repository.open(new LocalBackend(repoDir), 'pw');
  await assert.rejects(dumpFile(damaged, { snapshot: 'latest', name: 'db.sql', output: sink }), (err: unknown) => {
    assert.ok(err instanceof IntegrityError, String(err));
    assert.ok(err.message.includes(loc.packId.slice(0, 10)), err.message);
    return true;
  });
  const prefix = Buffer.concat(got);
  assert.ok(prefix.length < data.length, 'stopped at the damage');
  assert.equal(sha(prefix), sha(data.subarray(0, prefix.length)), 'what was written is an exact prefix');
});

/** The blob IDs of the snapshot's one file, from its tree. */
async function streamContent(repo: Repository): Promise<string[]> {
  const snap = await findSnapshot(repo, 'latest');
  const { single } = await treeAt(repo, snap.snapshot.tree, '/db.sql');
  assert.ok(single?.content?.length);
  return single.content;
}
