// A local copy of the key file that last opened a repository at a location, so that the next open
// can run its scrypt (~75 ms on a thread-pool thread) while the storage SDK is still loading and the
// key listing is on its way, instead of after listing and reading the key file (two round trips).
//
// The copy is only an accelerator and is trusted for nothing:
// - it is used only when its bytes hash to its name, as every restic key file's do;
// - the key it unwraps is used only when a file of that name is listed in the repository (a key
//   removed with `key remove` opens nothing, whatever a copy of it says);
// - the master key must still decrypt and authenticate the repository's config.
// Anything else (no copy, another password, a removed key, an unreadable cache) is the usual open.
// Files: CACHE_DIR/keys/SHA256(location), mode 0600; a key file holds no secret without the password
// (the repository stores the same bytes).
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { keyFromBytes, type PreferredKey } from './key-file.js';

const HEX64 = /^[0-9a-f]{64}$/;

function fileFor(cacheDir: string, locationKey: string): string {
  return path.join(cacheDir, 'keys', crypto.createHash('sha256').update(locationKey).digest('hex'));
}

/**
 * Unwraps the master key from the cached key file of this location, if there is one the password
 * opens. Never rejects.
 */
export async function cachedKey(cacheDir: string, locationKey: string, password: Buffer): Promise<PreferredKey | undefined> {
  try {
    const raw = await fsp.readFile(fileFor(cacheDir, locationKey));
    const nl = raw.indexOf(0x0a);
    const keyId = raw.subarray(0, nl).toString('latin1');
    const body = raw.subarray(nl + 1);
    if (nl !== 64 || !HEX64.test(keyId) || crypto.createHash('sha256').update(body).digest('hex') !== keyId) return undefined;
    const master = await keyFromBytes(keyId, body, password);
    return master ? { keyId, master } : undefined;
  } catch {
    return undefined;
  }
}

/** Keeps a copy of the key file that opened the repository at this location (errors are ignored). */
export async function rememberKey(cacheDir: string, locationKey: string, keyId: string, raw: Buffer): Promise<void> {
  const file = fileFor(cacheDir, locationKey);
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    await fsp.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
    await fsp.writeFile(tmp, Buffer.concat([Buffer.from(`${keyId}\n`, 'latin1'), raw]), { mode: 0o600 });
    await fsp.rename(tmp, file);
  } catch {
    await fsp.rm(tmp, { force: true }).catch(() => {});
  }
}
