// Worker thread for check --read-data: verifies whole packs (verify-pack.ts) with synchronous
// decryption, decompression and hashing, so each core works through its own pack without a
// thread-pool round trip per blob. Job: {id, buf, size, blobs}: the pack is the first `size` bytes
// of `buf`, a shared buffer the caller reuses for the next pack once the answer is in (so the
// worker may overwrite it: blobs are decrypted in place). The master key comes as workerData.
// Answer: the problems found. Nothing is allocated per blob but the cipher's fixed-size pieces.
import { ScratchDecompressor } from '../repository/compression.js';
import { MasterKey, masterKeyFromData, MasterKeyData, open, openInPlace, sha256hex } from '../repository/crypto.js';
import type { PackedBlob } from '../repository/pack.js';
import { serveJobs } from '../core/worker-pool.js';
import { collectYoung } from '../core/gc.js';
import { verifyPackBytes, VerifyOps } from './verify-pack.js';
import type { CheckProblem } from './check.js';

export interface VerifyJob {
  id: string;
  buf: SharedArrayBuffer | ArrayBuffer;
  size: number;
  blobs: readonly PackedBlob[];
}

// One blob at a time, each plaintext hashed before the next is decompressed into the same buffer.
const scratch = new ScratchDecompressor();
const syncOps: VerifyOps = { open, openInPlace, decompress: (d, what) => scratch.decompress(d, what), sha256hex, blobConcurrency: 1 };

let key: MasterKey | undefined;

serveJobs<VerifyJob, CheckProblem[]>(
  (job, data) => {
    key ??= masterKeyFromData(data as MasterKeyData);
    return verifyPackBytes(key, job.id, Buffer.from(job.buf, 0, job.size), job.blobs, syncOps);
  },
  // The cipher's pieces of this pack are young garbage outside V8's heap: freed now, not when V8
  // gets round to it.
  collectYoung,
);
