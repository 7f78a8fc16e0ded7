// Worker thread for the data phase of a restore: each job is one read region of a pack (in the
// restorer's shared read ring, or transferred), restored by restoreRegion with decryption in place,
// decompression into one reused buffer, hashing and file calls; or a run of a file's blobs that
// restore-stream writes out, decoded by decodeRegion into its output ring. The master key comes as
// workerData.
import { ScratchDecompressor } from '../repository/compression.js';
import { MasterKey, masterKeyFromData, MasterKeyData, openInPlace, sha256hex } from '../repository/crypto.js';
import { serveJobs } from '../core/worker-pool.js';
import { collectYoung } from '../core/gc.js';
import { decodeRegion, restoreRegion, type DecodeJob, type DecodeOps, type DecodeResult, type RegionJob, type RegionOps, type RegionResult } from './restore-region.js';

const scratch = new ScratchDecompressor();
const ops: RegionOps = { open: openInPlace, decompress: (d, what) => scratch.decompress(d, what), sha256hex };
const decodeOps: DecodeOps = { open: openInPlace, decompressInto: (dst, d, what) => scratch.decompressInto(dst, d, what), sha256hex };
let key: MasterKey | undefined;

serveJobs<RegionJob | DecodeJob, RegionResult | DecodeResult>(
  (job, data) => {
    key ??= masterKeyFromData(data as MasterKeyData);
    return 'out' in job ? decodeRegion(key, job, decodeOps) : restoreRegion(key, job, ops);
  },
  // The cipher's output pieces are garbage once copied into the region; their memory is freed
  // only when V8 collects them, which it put off until tens of MB had piled up per worker.
  collectYoung,
);
