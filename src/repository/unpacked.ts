// "Unpacked" files: index, snapshots, locks (reference §5). In v2 their plaintext is 0x02 ‖ zstd(JSON);
// readers also accept raw JSON starting with '{' or '['. The file name is SHA-256 of the stored bytes.
import { IntegrityError } from '../core/errors.js';
import { MasterKey, open, seal, sha256hex } from './crypto.js';
import { compress, decompress } from './compression.js';

export async function encodeUnpacked(key: MasterKey, json: Buffer, version: 1 | 2): Promise<{ id: string; data: Buffer }> {
  let plain = json;
  if (version === 2) {
    const z = await compress(json);
    plain = Buffer.allocUnsafe(z.length + 1);
    plain[0] = 2;
    z.copy(plain, 1);
  }
  const data = seal(key, plain);
  return { id: sha256hex(data), data };
}

export async function decodeUnpacked(key: MasterKey, data: Buffer, version: 1 | 2, what: string, id?: string): Promise<Buffer> {
  if (id !== undefined && sha256hex(data) !== id) {
    throw new IntegrityError(`${what}: content does not match its name (file damaged or truncated)`);
  }
  const plain = open(key, data, what);
  if (version === 1 || plain.length === 0) return plain;
  const b = plain[0];
  if (b === 0x7b || b === 0x5b) return plain;
  if (b === 0x02) return decompress(plain.subarray(1), what);
  throw new IntegrityError(`${what}: unsupported encoding format ${b}`);
}
