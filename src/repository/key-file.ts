// Key files (keys/<ID>): plain JSON wrapping the master key with a password-derived key (reference §3.4).
import crypto from 'node:crypto';
import os from 'node:os';
import { DmctlError, IntegrityError, NoRepositoryError, WrongPasswordError, isNotFound } from '../core/errors.js';
import { Backend, listAll } from '../storage/backend.js';
import { localTimestamp } from './time.js';
import { MasterKey, masterKeyJson, open, parseMasterKeyJson, seal, sha256hex, userKeyFromScrypt } from './crypto.js';

export interface ScryptParams {
  N: number;
  r: number;
  p: number;
}

/** N=2^15, r=8 as restic calibrates on any reasonable machine; p=1 (restic's own fallback) keeps every open ~0.1 s. */
export const DEFAULT_SCRYPT: ScryptParams = { N: 32768, r: 8, p: 1 };
/** restic 0.14 tries at most this many key files when opening a repository. */
export const MAX_KEYS_TRIED = 20;

export interface KeyFile {
  created: string;
  username?: string;
  hostname?: string;
  kdf: string;
  N: number;
  r: number;
  p: number;
  salt: string;
  data: string;
}

export interface KeyInfo {
  id: string;
  created: string;
  username: string;
  hostname: string;
}

function checkParams(kf: KeyFile): void {
  const { N, r, p } = kf;
  const pow2 = Number.isInteger(N) && N > 1 && (N & (N - 1)) === 0;
  if (kf.kdf !== 'scrypt' || !pow2 || !(r >= 1) || !(p >= 1) || r * p >= 2 ** 30 || r > (2 ** 31 - 1) / 256 || N > (2 ** 31 - 1) / (128 * r)) {
    throw new IntegrityError('key file has invalid scrypt parameters');
  }
}

export function deriveKey(password: Buffer, salt: Buffer, params: ScryptParams): Promise<Buffer> {
  const maxmem = 256 * params.N * params.r + 64 * 1024 * 1024;
  return new Promise((resolve, reject) => {
    crypto.scrypt(password, salt, 64, { N: params.N, r: params.r, p: params.p, maxmem }, (err, dk) => (err ? reject(err) : resolve(dk)));
  });
}

function toBuf(pw: string | Buffer): Buffer {
  return typeof pw === 'string' ? Buffer.from(pw, 'utf8') : pw;
}

export function currentUsername(): string {
  try {
    return os.userInfo().username;
  } catch {
    return '';
  }
}

/** Writes a new key file for `master` protected by `password`; returns its ID. */
export async function addKey(
  be: Backend,
  master: MasterKey,
  password: string | Buffer,
  opts: { username?: string; hostname?: string; params?: ScryptParams; onWritten?: (id: string, bytes: Buffer) => void } = {},
): Promise<string> {
  const params = opts.params ?? DEFAULT_SCRYPT;
  const salt = crypto.randomBytes(64);
  const dk = await deriveKey(toBuf(password), salt, params);
  const data = seal(userKeyFromScrypt(dk), Buffer.from(masterKeyJson(master)));
  const kf: KeyFile = {
    created: localTimestamp(),
    username: opts.username ?? currentUsername(),
    hostname: opts.hostname ?? os.hostname(),
    kdf: 'scrypt',
    N: params.N,
    r: params.r,
    p: params.p,
    salt: salt.toString('base64'),
    data: data.toString('base64'),
  };
  const bytes = Buffer.from(JSON.stringify(kf));
  const id = sha256hex(bytes);
  await be.save('keys', id, bytes);
  opts.onWritten?.(id, bytes);
  return id;
}

export async function loadKeyFile(be: Backend, id: string): Promise<KeyFile> {
  return parseKeyFile(id, await be.load('keys', id));
}

function parseKeyFile(id: string, raw: Buffer): KeyFile {
  try {
    return JSON.parse(raw.toString('utf8')) as KeyFile;
  } catch {
    throw new IntegrityError(`key file ${id.slice(0, 10)} is not valid JSON`);
  }
}

/** Unwraps the master key from a key file's bytes; undefined when the password does not fit. */
export async function keyFromBytes(id: string, raw: Buffer, password: string | Buffer): Promise<MasterKey | undefined> {
  const kf = parseKeyFile(id, raw);
  checkParams(kf);
  const salt = Buffer.from(kf.salt, 'base64');
  if (salt.length !== 64) throw new IntegrityError(`key file ${id.slice(0, 10)}: salt is not 64 bytes`);
  const dk = await deriveKey(toBuf(password), salt, kf);
  let plain: Buffer;
  try {
    plain = open(userKeyFromScrypt(dk), Buffer.from(kf.data, 'base64'), `key ${id.slice(0, 10)}`);
  } catch (err) {
    if (err instanceof IntegrityError) return undefined;
    throw err;
  }
  return parseMasterKeyJson(plain.toString('utf8'));
}

/** Tries to unwrap the master key from one key file; undefined when the password does not fit. */
export async function tryKey(be: Backend, id: string, password: string | Buffer): Promise<MasterKey | undefined> {
  return (await tryKeyRaw(be, id, password)).master;
}

async function tryKeyRaw(be: Backend, id: string, password: string | Buffer): Promise<{ master?: MasterKey; raw: Buffer }> {
  const raw = await be.load('keys', id);
  return { master: await keyFromBytes(id, raw, password), raw };
}

/** A key already unwrapped from a local copy of one of the repository's key files (key-cache.ts). */
export interface PreferredKey {
  keyId: string;
  master: MasterKey;
}

/**
 * Finds the key file that `password` opens (hint first, at most MAX_KEYS_TRIED like restic unless `all`).
 * Throws NoRepositoryError when there are no keys, WrongPasswordError when none fits.
 * A `preferred` key is taken when its file is listed in the repository (a removed key file opens
 * nothing, whatever a local copy of it says); `raw` is the key file read otherwise.
 */
export async function findKey(
  be: Backend,
  password: string | Buffer,
  opts: { hint?: string; all?: boolean; preferred?: Promise<PreferredKey | undefined> } = {},
): Promise<{ master: MasterKey; keyId: string; raw?: Buffer }> {
  let ids: string[];
  try {
    ids = (await listAll(be, 'keys')).map((f) => f.name);
  } catch (err) {
    if (isNotFound(err)) throw new NoRepositoryError(be.location);
    throw err;
  }
  if (ids.length === 0) throw new NoRepositoryError(be.location);
  const preferred = await opts.preferred?.catch(() => undefined);
  if (preferred && ids.includes(preferred.keyId) && (!opts.hint || preferred.keyId.startsWith(opts.hint))) return preferred;
  if (opts.hint) {
    const h = ids.find((i) => i.startsWith(opts.hint!));
    if (h) ids = [h, ...ids.filter((i) => i !== h)];
  }
  if (!opts.all) ids = ids.slice(0, Math.max(MAX_KEYS_TRIED, opts.hint ? 1 : 0));
  let lastErr: unknown;
  for (const id of ids) {
    try {
      const { master, raw } = await tryKeyRaw(be, id, password);
      if (master) return { master, keyId: id, raw };
    } catch (err) {
      if (err instanceof DmctlError && !(err instanceof IntegrityError)) throw err;
      lastErr = err; // a damaged key file must not hide a good one
    }
  }
  if (lastErr && ids.length === 1) throw lastErr;
  throw new WrongPasswordError();
}

export async function listKeys(be: Backend): Promise<KeyInfo[]> {
  const out: KeyInfo[] = [];
  for (const f of await listAll(be, 'keys')) {
    try {
      const kf = await loadKeyFile(be, f.name);
      out.push({ id: f.name, created: kf.created, username: kf.username ?? '', hostname: kf.hostname ?? '' });
    } catch {
      out.push({ id: f.name, created: '', username: '?', hostname: '?' });
    }
  }
  return out;
}

export async function removeKey(be: Backend, keyId: string): Promise<void> {
  await be.remove('keys', keyId);
}
