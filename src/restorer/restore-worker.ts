// Worker thread for the data phase of a restore: each job is one read region of a pack (transferred,
// not copied), restored by restoreRegion with synchronous decryption, decompression into one reused
// buffer, hashing and file calls. The master key comes as workerData.
import { ScratchDecompressor } from '../repository/compression.js';
import { MasterKey, masterKeyFromData, MasterKeyData, open, sha256hex } from '../repository/crypto.js';
import { serveJobs } from '../core/worker-pool.js';
import { restoreRegion, type RegionJob, type RegionOps, type RegionResult } from './restore-region.js';

const scratch = new ScratchDecompressor();
const ops: RegionOps = { open, decompress: (d, what) => scratch.decompress(d, what), sha256hex };
let key: MasterKey | undefined;

serveJobs<RegionJob, RegionResult>((job, data) => {
  key ??= masterKeyFromData(data as MasterKeyData);
  return restoreRegion(key, job, ops);
});
