// restic's authenticated encryption: AES-256-CTR + Poly1305-AES (reference §3).
// Stored form of every encrypted object: IV (16) ‖ ciphertext ‖ MAC (16). The MAC covers the
// ciphertext only; the one-time Poly1305 key is r ‖ AES-128-ECB(k, IV).
import crypto from 'node:crypto';
import sodium from 'sodium-native';
import { IntegrityError } from '../core/errors.js';

export interface MasterKey {
  /** AES-256 key. */
  encrypt: Buffer;
  /** AES-128 key deriving the Poly1305 s part from the IV. */
  macK: Buffer;
  /** Poly1305 r (clamped before use). */
  macR: Buffer;
}

export const OVERHEAD = 32;
export const IV_SIZE = 16;
const MAC_SIZE = 16;
const R_MASK = [0xff, 0xff, 0xff, 0x0f, 0xfc, 0xff, 0xff, 0x0f, 0xfc, 0xff, 0xff, 0x0f, 0xfc, 0xff, 0xff, 0x0f];

function clampR(r: Buffer): Buffer {
  const out = Buffer.allocUnsafe(16);
  for (let i = 0; i < 16; i++) out[i] = r[i] & R_MASK[i];
  return out;
}

function allZero(b: Uint8Array): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}

export function newMasterKey(): MasterKey {
  for (;;) {
    const k: MasterKey = { encrypt: crypto.randomBytes(32), macK: crypto.randomBytes(16), macR: clampR(crypto.randomBytes(16)) };
    if (validKey(k)) return k;
  }
}

export function validKey(k: MasterKey): boolean {
  return k.encrypt.length === 32 && k.macK.length === 16 && k.macR.length === 16 && !allZero(k.encrypt) && !allZero(k.macK) && !allZero(k.macR);
}

/** Per key: one AES-128-ECB cipher (ECB keeps no state between blocks, so it can be reused) and clamped r. */
const macState = new WeakMap<MasterKey, { ecb: crypto.Cipher; r: Buffer }>();

/** Builds the 32-byte one-time Poly1305 key r ‖ AES-128-ECB(macK, iv), into `out`. */
function polyKey(key: MasterKey, iv: Uint8Array, out: Buffer): void {
  let st = macState.get(key);
  if (!st) {
    const ecb = crypto.createCipheriv('aes-128-ecb', key.macK, null);
    ecb.setAutoPadding(false);
    st = { ecb, r: clampR(key.macR) };
    macState.set(key, st);
  }
  const s = st.ecb.update(iv);
  st.r.copy(out, 0);
  s.copy(out, 16);
}

// IVs come from a pool of CSPRNG output refilled 4 KiB at a time: one randomBytes call per 256
// blobs instead of one per blob (each call has a fixed cost that showed in backups of small files).
let ivPool = Buffer.alloc(0);
let ivPos = 0;

function newIV(): Buffer {
  for (;;) {
    if (ivPos + IV_SIZE > ivPool.length) {
      ivPool = crypto.randomBytes(4096);
      ivPos = 0;
    }
    const iv = Buffer.from(ivPool.subarray(ivPos, ivPos + IV_SIZE));
    ivPool.fill(0, ivPos, ivPos + IV_SIZE); // an IV is used once; don't keep a copy around
    ivPos += IV_SIZE;
    if (!allZero(iv)) return iv;
  }
}

/** Encrypts `plaintext` into IV ‖ ciphertext ‖ MAC. */
export function seal(key: MasterKey, plaintext: Uint8Array): Buffer {
  const iv = newIV();
  return assemble(key, iv, crypto.createCipheriv('aes-256-ctr', key.encrypt, iv).update(plaintext));
}

/** Bytes per cipher call in the in-place functions: every call's output has this one size. */
const SEAL_PIECE = 64 * 1024;

/** Runs AES-CTR over `region` where it is, SEAL_PIECE bytes per call (encryption and decryption alike). */
function ctrInPlace(c: crypto.Cipher | crypto.Decipher, region: Buffer): void {
  for (let off = 0; off < region.length; off += SEAL_PIECE) {
    const end = Math.min(region.length, off + SEAL_PIECE);
    region.set(c.update(region.subarray(off, end)), off);
  }
}

/**
 * `seal` in place: `buf` holds the plaintext at [IV_SIZE, IV_SIZE + n) and room for the MAC after
 * it; writes the IV before it, encrypts it where it is and appends the MAC. Returns the sealed
 * length (n + OVERHEAD). The cipher runs over fixed-size pieces, so that its output buffers are all
 * one size and the allocator reuses them (in the seal workers, outputs the size of each blob
 * fragmented the thread's heap until it grew with the length of a stream).
 */
export function sealInPlace(key: MasterKey, buf: Buffer, n: number): number {
  if (buf.length < n + OVERHEAD) throw new RangeError(`sealInPlace: ${buf.length} bytes of room for ${n + OVERHEAD}`);
  const iv = newIV();
  iv.copy(buf, 0);
  ctrInPlace(crypto.createCipheriv('aes-256-ctr', key.encrypt, iv), buf.subarray(IV_SIZE, IV_SIZE + n));
  const pk = Buffer.allocUnsafe(32);
  polyKey(key, iv, pk);
  sodium.crypto_onetimeauth(buf.subarray(IV_SIZE + n, IV_SIZE + n + MAC_SIZE), buf.subarray(IV_SIZE, IV_SIZE + n), pk);
  return n + OVERHEAD;
}

/** A master key as plain bytes a worker thread can be given (structured clone turns Buffers into Uint8Arrays). */
export interface MasterKeyData {
  encrypt: Uint8Array;
  macK: Uint8Array;
  macR: Uint8Array;
}

export function masterKeyData(key: MasterKey): MasterKeyData {
  return { encrypt: key.encrypt, macK: key.macK, macR: key.macR };
}

export function masterKeyFromData(d: MasterKeyData): MasterKey {
  return { encrypt: Buffer.from(d.encrypt), macK: Buffer.from(d.macK), macR: Buffer.from(d.macR) };
}

/** IV ‖ ciphertext ‖ MAC(ciphertext) in one new buffer. */
function assemble(key: MasterKey, iv: Buffer, ct: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(IV_SIZE + ct.length + MAC_SIZE);
  iv.copy(out, 0);
  out.set(ct, IV_SIZE);
  const pk = Buffer.allocUnsafe(32);
  polyKey(key, iv, pk);
  sodium.crypto_onetimeauth(out.subarray(IV_SIZE + ct.length), out.subarray(IV_SIZE, IV_SIZE + ct.length), pk);
  return out;
}

/** Splits IV ‖ ciphertext ‖ MAC and checks the MAC; throws naming `what` when it does not match. */
function authenticate(key: MasterKey, data: Uint8Array, what: string): { iv: Buffer; ct: Buffer } {
  if (data.length < OVERHEAD) throw new IntegrityError(`${what}: ciphertext too short (${data.length} bytes)`);
  const buf = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.length);
  const iv = buf.subarray(0, IV_SIZE);
  const ct = buf.subarray(IV_SIZE, buf.length - MAC_SIZE);
  const pk = Buffer.allocUnsafe(32);
  polyKey(key, iv, pk);
  if (!sodium.crypto_onetimeauth_verify(buf.subarray(buf.length - MAC_SIZE), ct, pk)) {
    throw new IntegrityError(`${what}: ciphertext verification failed (MAC mismatch)`, {
      hint: 'the data is damaged or was written with another key; run `dmctl check --read-data`',
    });
  }
  return { iv, ct };
}

/** Verifies the MAC and decrypts. `what` names the object in the error (e.g. "blob 1a2b… in pack 3c4d…"). */
export function open(key: MasterKey, data: Uint8Array, what = 'object'): Buffer {
  const { iv, ct } = authenticate(key, data, what);
  return crypto.createDecipheriv('aes-256-ctr', key.encrypt, iv).update(ct);
}

/**
 * `open` in place: checks the MAC, then decrypts the ciphertext where it is (in SEAL_PIECE pieces,
 * so every cipher output has one size and the allocator reuses them) and returns the plaintext as
 * a view of `data`. Nothing is written when the MAC does not match.
 */
export function openInPlace(key: MasterKey, data: Buffer, what = 'object'): Buffer {
  const { iv, ct } = authenticate(key, data, what);
  ctrInPlace(crypto.createDecipheriv('aes-256-ctr', key.encrypt, iv), ct);
  return ct;
}

/** MAC check only (no decryption), for `check --read-data` style verification. */
export function verify(key: MasterKey, data: Uint8Array): boolean {
  if (data.length < OVERHEAD) return false;
  const buf = Buffer.from(data.buffer, data.byteOffset, data.length);
  const pk = Buffer.allocUnsafe(32);
  polyKey(key, buf.subarray(0, IV_SIZE), pk);
  return sodium.crypto_onetimeauth_verify(buf.subarray(buf.length - MAC_SIZE), buf.subarray(IV_SIZE, buf.length - MAC_SIZE), pk);
}

/** The master key as restic serialises it (compact JSON, this field order). */
export function masterKeyJson(k: MasterKey): string {
  return `{"mac":{"k":"${k.macK.toString('base64')}","r":"${k.macR.toString('base64')}"},"encrypt":"${k.encrypt.toString('base64')}"}`;
}

export function parseMasterKeyJson(s: string): MasterKey {
  const j = JSON.parse(s) as { mac?: { k?: string; r?: string }; encrypt?: string };
  const k: MasterKey = {
    encrypt: Buffer.from(j.encrypt ?? '', 'base64'),
    macK: Buffer.from(j.mac?.k ?? '', 'base64'),
    macR: Buffer.from(j.mac?.r ?? '', 'base64'),
  };
  if (!validKey(k)) throw new IntegrityError('master key is invalid (wrong length or all zero)');
  return k;
}

/** Key derived from a password by scrypt, used only to wrap the master key (reference §3.4). */
export function userKeyFromScrypt(dk: Buffer): MasterKey {
  return { encrypt: dk.subarray(0, 32), macK: dk.subarray(32, 48), macR: dk.subarray(48, 64) };
}

export function sha256(data: Uint8Array): Buffer {
  return crypto.createHash('sha256').update(data).digest();
}

// crypto.hash (Node >= 20.12) is the one-shot form: no Hash object per call.
const oneShot = (crypto as unknown as { hash?: (alg: string, data: Uint8Array, enc: 'hex') => string }).hash;

export function sha256hex(data: Uint8Array): string {
  return oneShot ? oneShot('sha256', data, 'hex') : crypto.createHash('sha256').update(data).digest('hex');
}

// Large inputs go to the thread pool through WebCrypto (its digest and AES-CTR run off the main
// thread), so one process uses every core for hashing and decryption without worker threads.
// Small inputs stay synchronous: a thread-pool round trip costs more than the work.
export const OFFLOAD_MIN = 64 * 1024;
const subtle = crypto.webcrypto.subtle;

/** SHA-256 as hex, on the thread pool for large inputs. */
export async function sha256hexAsync(data: Uint8Array): Promise<string> {
  if (data.length < OFFLOAD_MIN) return sha256hex(data);
  return Buffer.from(await subtle.digest('SHA-256', data)).toString('hex');
}

const aesKeys = new WeakMap<MasterKey, Promise<crypto.webcrypto.CryptoKey>>();

function aesKeyOf(key: MasterKey): Promise<crypto.webcrypto.CryptoKey> {
  let k = aesKeys.get(key);
  if (!k) {
    k = subtle.importKey('raw', key.encrypt, { name: 'AES-CTR' }, false, ['decrypt', 'encrypt']);
    aesKeys.set(key, k);
  }
  return k;
}

/** `seal` with the encryption of large objects on the thread pool. */
export async function sealAsync(key: MasterKey, plaintext: Uint8Array): Promise<Buffer> {
  if (plaintext.length < OFFLOAD_MIN) return seal(key, plaintext);
  const iv = newIV();
  const ct = await subtle.encrypt({ name: 'AES-CTR', counter: iv, length: 128 }, await aesKeyOf(key), plaintext);
  return assemble(key, iv, new Uint8Array(ct));
}

/** `open` with the decryption of large objects on the thread pool (the MAC check stays here: it is cheap). */
export async function openAsync(key: MasterKey, data: Uint8Array, what = 'object'): Promise<Buffer> {
  if (data.length < OFFLOAD_MIN) return open(key, data, what);
  const { iv, ct } = authenticate(key, data, what);
  // restic's counter is the whole 128-bit IV.
  return Buffer.from(await subtle.decrypt({ name: 'AES-CTR', counter: iv, length: 128 }, await aesKeyOf(key), ct));
}
