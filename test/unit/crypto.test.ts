// The asynchronous (thread-pool) forms of decryption and hashing must give exactly what the
// synchronous ones give, including where restic's 128-bit CTR counter wraps, and must refuse
// damaged ciphertext the same way.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { newMasterKey, open, openAsync, OFFLOAD_MIN, seal, sealAsync, sha256hex, sha256hexAsync } from '../../src/repository/crypto.js';
import { IntegrityError } from '../../src/core/errors.js';

/** Encrypts with a chosen IV: AES-256-CTR over the full 128-bit block (as Go's cipher.NewCTR) and Poly1305-AES, computed here without the library. */
function sealWithIv(key: ReturnType<typeof newMasterKey>, iv: Buffer, plain: Buffer): Buffer {
  const ct = crypto.createCipheriv('aes-256-ctr', key.encrypt, iv).update(plain);
  const ecb = crypto.createCipheriv('aes-128-ecb', key.macK, null);
  ecb.setAutoPadding(false);
  const s = ecb.update(iv);
  const r = Buffer.from(key.macR);
  const mask = [0xff, 0xff, 0xff, 0x0f, 0xfc, 0xff, 0xff, 0x0f, 0xfc, 0xff, 0xff, 0x0f, 0xfc, 0xff, 0xff, 0x0f];
  for (let i = 0; i < 16; i++) r[i] &= mask[i];
  return Buffer.concat([iv, ct, poly1305(Buffer.concat([r, s]), ct)]);
}

/** Poly1305 with BigInt (RFC 8439), independent of sodium. */
function poly1305(key32: Buffer, msg: Buffer): Buffer {
  const le = (b: Buffer) => BigInt('0x' + Buffer.from(b).reverse().toString('hex') || '0');
  const r = le(key32.subarray(0, 16));
  const s = le(key32.subarray(16, 32));
  const p = (1n << 130n) - 5n;
  let acc = 0n;
  for (let i = 0; i < msg.length; i += 16) {
    const block = Buffer.concat([msg.subarray(i, i + 16), Buffer.from([1])]);
    acc = ((acc + le(block)) * r) % p;
  }
  acc = (acc + s) % (1n << 128n);
  const hex = acc.toString(16).padStart(32, '0');
  return Buffer.from(hex, 'hex').reverse();
}

describe('thread-pool crypto', () => {
  const key = newMasterKey();

  it('openAsync decrypts large objects exactly like open, also across a counter wrap', async () => {
    for (const len of [OFFLOAD_MIN - 1, OFFLOAD_MIN, 3 * OFFLOAD_MIN + 7, 2 * 1024 * 1024 + 3]) {
      const plain = crypto.randomBytes(len);
      const sealed = seal(key, plain);
      assert.ok((await openAsync(key, sealed, 'x')).equals(plain), `length ${len}`);
      assert.ok(open(key, sealed, 'x').equals(plain));
      // An IV whose low 64 bits are about to overflow: the carry must go into the high half.
      const iv = Buffer.concat([crypto.randomBytes(8), Buffer.from('fffffffffffffffe', 'hex')]);
      const own = sealWithIv(key, iv, plain);
      assert.ok(open(key, own, 'x').equals(plain), 'hand-sealed object opens synchronously');
      assert.ok((await openAsync(key, own, 'x')).equals(plain), `wrap, length ${len}`);
      // The all-ones IV wraps the whole 128-bit counter.
      const ones = sealWithIv(key, Buffer.alloc(16, 0xff), plain);
      assert.ok((await openAsync(key, ones, 'x')).equals(open(key, ones, 'x')));
    }
  });

  it('openAsync refuses a flipped bit with the same error as open', async () => {
    const sealed = seal(key, crypto.randomBytes(OFFLOAD_MIN * 2));
    sealed[100] ^= 0x10;
    await assert.rejects(openAsync(key, sealed, 'blob b in pack p'), (err: unknown) => err instanceof IntegrityError && /blob b in pack p: ciphertext verification failed/.test(err.message));
    assert.throws(() => open(key, sealed, 'blob b in pack p'), IntegrityError);
  });

  it('sha256hexAsync equals SHA-256 for small and large inputs', async () => {
    for (const len of [0, 1, OFFLOAD_MIN - 1, OFFLOAD_MIN, 5 * 1024 * 1024 + 1]) {
      const b = crypto.randomBytes(len);
      const want = crypto.createHash('sha256').update(b).digest('hex');
      assert.equal(await sha256hexAsync(b), want, `length ${len}`);
      assert.equal(sha256hex(b), want);
      // A view into a larger buffer hashes only its own bytes.
      const big = Buffer.concat([Buffer.from('prefix'), b, Buffer.from('suffix')]);
      assert.equal(await sha256hexAsync(big.subarray(6, 6 + len)), want);
    }
  });

  it('sealAsync output opens with open, with a fresh IV each time', async () => {
    for (const len of [0, 10, OFFLOAD_MIN, 1024 * 1024 + 5]) {
      const plain = crypto.randomBytes(len);
      const a = await sealAsync(key, plain);
      const b = await sealAsync(key, plain);
      assert.equal(a.length, len + 32);
      assert.ok(open(key, a, 'x').equals(plain), `length ${len}`);
      assert.ok(!a.subarray(0, 16).equals(b.subarray(0, 16)), 'IVs differ');
      // The payload really is encrypted, not copied.
      if (len >= 16) assert.ok(!a.subarray(16, 32).equals(plain.subarray(0, 16)));
    }
  });
});
