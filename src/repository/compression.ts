// zstd, as restic v2 uses it: one plain frame per blob or unpacked file, no checksum required.
// Runs on the libuv thread pool, so compression of one blob overlaps hashing/encryption of the next.
import { compress as zc, decompress as zd } from '@mongodb-js/zstd';
import { IntegrityError } from '../core/errors.js';

/** restic's "auto" mode corresponds to zstd's default level (3). */
export const ZSTD_LEVEL = 3;

export async function compress(data: Uint8Array, level = ZSTD_LEVEL): Promise<Buffer> {
  return zc(Buffer.from(data.buffer, data.byteOffset, data.length), level);
}

export async function decompress(data: Uint8Array, what = 'data'): Promise<Buffer> {
  try {
    return await zd(Buffer.from(data.buffer, data.byteOffset, data.length));
  } catch (err) {
    throw new IntegrityError(`${what}: zstd decompression failed (${(err as Error).message})`);
  }
}
