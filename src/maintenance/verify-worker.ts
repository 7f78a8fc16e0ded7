// Worker thread for check --read-data: verifies whole packs (verify-pack.ts) with synchronous
// decryption, decompression and hashing, so each core works through its own pack without a
// thread-pool round trip per blob. Job: {id, buf (the pack's bytes, transferred), blobs}; the
// master key comes as workerData. Answer: the problems found.
import { ScratchDecompressor } from '../repository/compression.js';
import { MasterKey, masterKeyFromData, MasterKeyData, open, sha256hex } from '../repository/crypto.js';
import type { PackedBlob } from '../repository/pack.js';
import { serveJobs } from '../core/worker-pool.js';
import { collectGarbage } from '../core/gc.js';
import { verifyPackBytes, VerifyOps } from './verify-pack.js';
import type { CheckProblem } from './check.js';

export interface VerifyJob {
  id: string;
  buf: ArrayBuffer;
  blobs: readonly PackedBlob[];
}

// One blob at a time, each plaintext hashed before the next is decompressed into the same buffer.
const scratch = new ScratchDecompressor();
const syncOps: VerifyOps = { open, decompress: (d, what) => scratch.decompress(d, what), sha256hex, blobConcurrency: 1 };

let key: MasterKey | undefined;

serveJobs<VerifyJob, CheckProblem[]>(
  (job, data) => {
    key ??= masterKeyFromData(data as MasterKeyData);
    return verifyPackBytes(key, job.id, Buffer.from(job.buf), job.blobs, syncOps);
  },
  // The pack (16 MiB or more) and its decrypted blobs are garbage now, held outside V8's heap:
  // left to V8's own pace, each worker let several packs' worth pile up.
  collectGarbage,
);
