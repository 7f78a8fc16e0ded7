// Unit tests for src/chunker: polynomial arithmetic and the §11.5 chunk-boundary rules.
// The oracle for "identical to restic" is test/interop/chunker-restic.test.ts; here the fast chunker is checked
// against a literal, slow BigInt transcription of the reference (§11.3–11.5) and against properties that follow
// from the definition (zero runs, max size, streaming == whole buffer).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';

import {
  formatPolynomial,
  isIrreducible,
  parsePolynomial,
  polyMul,
  randomPolynomial,
} from '../../src/chunker/polynomial.js';
import { Chunker, chunkLengths, chunkStream, MAX_SIZE, MIN_SIZE } from '../../src/chunker/chunker.js';
import { DmctlError, IntegrityError } from '../../src/core/errors.js';

const KiB = 1024;
const MiB = 1024 * 1024;
/** restic chunker's documented test polynomial. */
const TEST_POL = 0x3da3358b4dc173n;
/** The polynomial of the repository the format reference verified against (written by `restic init`). */
const RESTIC_POL = 0x2afe75f54fe2c1n;

// ---------------------------------------------------------------------------------------------------------
// Independent helpers (deliberately not using the module under test)

/** Deterministic pseudo-random bytes: SHA-256 in counter mode over a seed string. */
function prng(seed: string, n: number): Buffer {
  const out = Buffer.allocUnsafe(n);
  for (let off = 0, ctr = 0; off < n; off += 32, ctr++) {
    const block = createHash('sha256').update(`${seed}/${ctr}`).digest();
    block.copy(out, off, 0, Math.min(32, n - off));
  }
  return out;
}

/** Deterministic small-integer generator (mulberry32). */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function bitLen(x: bigint): number {
  return x === 0n ? 0 : x.toString(2).length;
}

/** Schoolbook GF(2) remainder. */
function naiveMod(x: bigint, m: bigint): bigint {
  const dm = bitLen(m);
  for (let d = bitLen(x); d >= dm; d = bitLen(x)) x ^= m << BigInt(d - dm);
  return x;
}

/** Irreducibility by trial division by every polynomial of degree 1 … ⌊deg/2⌋ (small degrees only). */
function irreducibleByTrialDivision(p: bigint): boolean {
  const d = bitLen(p) - 1;
  if (d < 1) return false;
  for (let q = 2n; bitLen(q) - 1 <= d >> 1; q++) if (naiveMod(p, q) === 0n) return false;
  return true;
}

/** Number of monic irreducible polynomials of degree n over GF(2) (Gauss): (1/n) Σ_{d|n} μ(d) 2^(n/d). */
function gaussCount(n: number): number {
  const mobius = (k: number): number => {
    let r = 1;
    for (let f = 2; f * f <= k; f++) {
      if (k % f === 0) {
        k /= f;
        if (k % f === 0) return 0;
        r = -r;
      }
    }
    return k > 1 ? -r : r;
  };
  let s = 0;
  for (let d = 1; d <= n; d++) if (n % d === 0) s += mobius(d) * 2 ** (n / d);
  return s / n;
}

/** Literal BigInt transcription of reference §11.3–11.5 (slow; used as the spec). */
function referenceChunkLengths(data: Uint8Array, P: bigint): number[] {
  const k = 53n;
  const out: bigint[] = [];
  const mod: bigint[] = [];
  for (let b = 0; b < 256; b++) {
    let h = BigInt(b);
    for (let j = 0; j < 63; j++) h = naiveMod(h << 8n, P);
    out.push(h);
    mod.push(naiveMod(BigInt(b) << k, P) | (BigInt(b) << k));
  }
  const lengths: number[] = [];
  let pos = 0;
  while (pos < data.length) {
    const win = new Uint8Array(64);
    let wpos = 0;
    let digest = 0n;
    const slide = (c: number): void => {
      const o = win[wpos];
      win[wpos] = c;
      wpos = (wpos + 1) % 64;
      digest ^= out[o];
      const top = Number(digest >> (k - 8n));
      digest = ((digest << 8n) | BigInt(c)) ^ mod[top];
    };
    slide(1);
    let i = pos;
    let count = Math.min(MIN_SIZE - 64, data.length - pos);
    i += count;
    while (i < data.length) {
      slide(data[i]);
      i++;
      count++;
      if (count >= MIN_SIZE && ((digest & 0xfffffn) === 0n || count >= MAX_SIZE)) break;
    }
    lengths.push(i - pos);
    pos = i;
  }
  return lengths;
}

/** Feeds `data` to a Chunker in pieces of the given sizes (cycled), returns chunk lengths. */
function streamedLengths(data: Uint8Array, pol: bigint, pieceSize: () => number): number[] {
  const c = new Chunker(pol);
  const lengths: number[] = [];
  let chunkStart = 0;
  let off = 0;
  while (off < data.length) {
    const end = Math.min(data.length, off + Math.max(1, pieceSize()));
    // Hand over a separate buffer (a copy) so nothing can read beyond the piece.
    const piece = Uint8Array.from(data.subarray(off, end));
    let pos = 0;
    while (pos < piece.length) {
      const cut = c.next(piece, pos, piece.length);
      if (cut < 0) break;
      assert.ok(cut > pos && cut <= piece.length, `cut ${cut} outside (${pos}, ${piece.length}]`);
      lengths.push(off + cut - chunkStart);
      chunkStart = off + cut;
      pos = cut;
    }
    off = end;
  }
  if (chunkStart < data.length) lengths.push(data.length - chunkStart);
  return lengths;
}

/** A mix like reference §11.5: random, zero runs, repeated text, random. */
function mixedData(seed: string, size: number): Buffer {
  const parts: Buffer[] = [];
  const r = rng(parseInt(createHash('sha256').update(seed).digest('hex').slice(0, 8), 16));
  let total = 0;
  let n = 0;
  while (total < size) {
    let part: Buffer;
    switch (n++ % 4) {
      case 0: part = prng(`${seed}/${n}`, 1 * MiB + Math.floor(r() * 2 * MiB)); break;
      case 1: part = Buffer.alloc(Math.floor(r() * 1.5 * MiB)); break;
      case 2: part = Buffer.from('abcdefghijk'.repeat(Math.floor(r() * 100_000) + 1)); break;
      default: part = prng(`${seed}/x${n}`, Math.floor(r() * 700 * KiB)); break;
    }
    parts.push(part);
    total += part.length;
  }
  return Buffer.concat(parts).subarray(0, size);
}

const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);

/**
 * Random data whose 64-byte window ending at byte `last` (inclusive) has a Rabin fingerprint with low 20 bits
 * zero under P. The fingerprint Σ_j data[last−j]·x^(8j) mod P is linear and the three newest bytes enter it with
 * degree < 53 (no reduction), so they can be solved for directly.
 */
function craftCutAt(seed: string, size: number, last: number, P: bigint): Buffer {
  const data = prng(seed, size);
  data[last] = data[last - 1] = data[last - 2] = 0;
  const window = data.subarray(last - 63, last + 1);
  const r = naiveMod(BigInt('0x' + window.toString('hex')), P);
  data[last] = Number(r & 0xffn);
  data[last - 1] = Number((r >> 8n) & 0xffn);
  data[last - 2] = Number((r >> 16n) & 0x0fn) | (data[last - 3] & 0xf0);
  assert.equal(naiveMod(BigInt('0x' + data.subarray(last - 63, last + 1).toString('hex')), P) & 0xfffffn, 0n);
  return data;
}

// ---------------------------------------------------------------------------------------------------------
// Polynomials

test('isIrreducible: restic test polynomial and a restic-generated polynomial are irreducible', () => {
  assert.equal(isIrreducible(TEST_POL), true);
  assert.equal(isIrreducible(RESTIC_POL), true);
});

test('isIrreducible: products of polynomials are not irreducible', () => {
  assert.equal(isIrreducible(polyMul(0x7n, 0xbn)), false); // (x²+x+1)(x³+x+1)
  assert.equal(isIrreducible(polyMul(TEST_POL, 0x3n)), false); // P·(x+1), degree 54
  assert.equal(isIrreducible(polyMul(TEST_POL, TEST_POL)), false);
  assert.equal(isIrreducible(TEST_POL << 1n), false); // divisible by x
  // A degree-53 product of a degree-26 and a degree-27 irreducible factor.
  let a = (1n << 26n) | 3n;
  while (!irreducibleByTrialDivision(a)) a += 2n;
  let b = (1n << 27n) | 1n;
  while (!irreducibleByTrialDivision(b)) b += 2n;
  const prod = polyMul(a, b);
  assert.equal(prod.toString(2).length - 1, 53);
  assert.equal(isIrreducible(prod), false);
  assert.equal(isIrreducible(0n), false);
  assert.equal(isIrreducible(1n), false);
});

test('isIrreducible agrees with trial division for every polynomial of degree ≤ 10, and with Gauss counts', () => {
  const counts = new Map<number, number>();
  for (let p = 2n; p < 1n << 11n; p++) {
    const expected = irreducibleByTrialDivision(p);
    assert.equal(isIrreducible(p), expected, `polynomial 0x${p.toString(16)}`);
    if (expected) {
      const d = p.toString(2).length - 1;
      counts.set(d, (counts.get(d) ?? 0) + 1);
    }
  }
  for (let d = 1; d <= 10; d++) assert.equal(counts.get(d), gaussCount(d), `irreducibles of degree ${d}`);
});

test('randomPolynomial: degree 53, constant term set, irreducible, random', () => {
  const seen = new Set<bigint>();
  for (let i = 0; i < 5; i++) {
    const p = randomPolynomial();
    assert.equal(p >> 53n, 1n, 'degree 53');
    assert.equal(p & 1n, 1n, 'x^0 set');
    assert.ok(irreducibleByTrialDivisionLarge(p), 'independently irreducible');
    seen.add(p);
  }
  assert.ok(seen.size >= 4, 'five draws are (almost surely) different');
});

/** Ben-Or written out once more with the naive helpers, to check randomPolynomial's output independently. */
function irreducibleByTrialDivisionLarge(p: bigint): boolean {
  const mulMod = (a: bigint, b: bigint): bigint => {
    let r = 0n;
    for (let s = 0n; b >> s; s++) if ((b >> s) & 1n) r ^= a << s;
    return naiveMod(r, p);
  };
  const gcd = (x: bigint, y: bigint): bigint => {
    while (y) [x, y] = [y, naiveMod(x, y)];
    return x;
  };
  let xp = 2n;
  for (let i = 1; i <= 26; i++) {
    xp = mulMod(xp, xp);
    if (gcd(p, naiveMod(xp ^ 2n, p)) !== 1n) return false;
  }
  return true;
}

test('parsePolynomial / formatPolynomial', () => {
  assert.equal(parsePolynomial('3da3358b4dc173'), TEST_POL);
  assert.equal(parsePolynomial('2afe75f54fe2c1'), RESTIC_POL);
  assert.equal(parsePolynomial('3DA3358B4DC173'), TEST_POL, 'Go strconv accepts upper case');
  assert.equal(formatPolynomial(TEST_POL), '3da3358b4dc173');
  assert.equal(formatPolynomial(RESTIC_POL), '2afe75f54fe2c1');
  const p = randomPolynomial();
  assert.equal(parsePolynomial(formatPolynomial(p)), p);

  const bad = [
    '0x3da3358b4dc173', // prefix not allowed
    '',
    'xyz',
    ' 3da3358b4dc173',
    '3',                // degree 1
    '1da3358b4dc173',   // degree 52
    '7da3358b4dc173',   // degree 54
    (TEST_POL ^ 1n).toString(16), // degree 53, divisible by x
    polyMul(0x7n, (1n << 51n) | 1n).toString(16), // degree 53, divisible by x²+x+1
    '3da3358b4dc1730', // 60 bits
    '12345678901234567', // more than 64 bits
  ];
  for (const s of bad) {
    assert.throws(() => parsePolynomial(s), (e: unknown) => {
      assert.ok(e instanceof IntegrityError, `${JSON.stringify(s)}: ${String(e)}`);
      assert.equal(e.code, 'damaged');
      assert.ok(e.hint && e.hint.length > 0);
      assert.ok(!e.message.includes('\n'));
      return true;
    }, `parsePolynomial(${JSON.stringify(s)}) must throw`);
  }
});

// ---------------------------------------------------------------------------------------------------------
// Chunk boundaries (§11.5)

test('fast chunker equals the literal BigInt reference on mixed data (two polynomials)', () => {
  const data = mixedData('reference', 7 * MiB);
  for (const pol of [TEST_POL, RESTIC_POL]) {
    const expected = referenceChunkLengths(data, pol);
    assert.ok(expected.length >= 4, 'data produces several chunks');
    assert.deepEqual(chunkLengths(data, pol), expected, `polynomial ${pol.toString(16)}`);
  }
});

test('empty input gives no chunks; input < 512 KiB is one chunk', () => {
  assert.deepEqual(chunkLengths(new Uint8Array(0), TEST_POL), []);
  assert.deepEqual(chunkLengths(prng('one', 1), TEST_POL), [1]);
  assert.deepEqual(chunkLengths(prng('small', 300 * KiB), TEST_POL), [300 * KiB]);
  assert.deepEqual(chunkLengths(prng('almost', MIN_SIZE - 1), TEST_POL), [MIN_SIZE - 1]);
  assert.deepEqual(chunkLengths(prng('exact', MIN_SIZE), TEST_POL), [MIN_SIZE]);
  assert.deepEqual(chunkLengths(Buffer.alloc(MIN_SIZE - 1), RESTIC_POL), [MIN_SIZE - 1]);
});

test('exact MinSize edge: a fingerprint hit at L = MinSize cuts there, one at L = MinSize − 1 does not', () => {
  for (const pol of [TEST_POL, RESTIC_POL]) {
    const atMin = craftCutAt(`atmin-${pol}`, 3 * MiB, MIN_SIZE - 1, pol);
    const lens = chunkLengths(atMin, pol);
    assert.equal(lens[0], MIN_SIZE, 'cut right after byte MinSize−1 (exactly 64 bytes hashed)');
    assert.deepEqual(lens, referenceChunkLengths(atMin, pol));
    assert.deepEqual(streamedLengths(atMin, pol, () => 1), lens);
    assert.deepEqual(streamedLengths(atMin, pol, () => MIN_SIZE - 10), lens);

    const early = craftCutAt(`early-${pol}`, 3 * MiB, MIN_SIZE - 2, pol);
    const lens2 = chunkLengths(early, pol);
    assert.ok(lens2[0] > MIN_SIZE, `no cut below MinSize (got ${lens2[0]})`);
    assert.deepEqual(lens2, referenceChunkLengths(early, pol));

    // A hit in the second chunk, at its own MinSize: state was reset at the first cut.
    const second = craftCutAt(`second-${pol}`, 3 * MiB, 2 * MIN_SIZE - 1, pol);
    second.subarray(0, MIN_SIZE).fill(0); // first chunk: zeros → cut at exactly MinSize
    assert.deepEqual(chunkLengths(second, pol).slice(0, 2), [MIN_SIZE, MIN_SIZE]);
  }
});

test('runs of zero bytes cut every 512 KiB', () => {
  assert.deepEqual(chunkLengths(Buffer.alloc(5 * MiB), TEST_POL), Array(10).fill(MIN_SIZE));
  assert.deepEqual(chunkLengths(Buffer.alloc(3 * MiB + 100), RESTIC_POL), [...Array(6).fill(MIN_SIZE), 100]);
  // Random prefix, then zeros: the chunk running into the zeros ends as soon as it holds MinSize bytes and the
  // window is all zero (64 zero bytes in); every later chunk is exactly MinSize.
  for (const pol of [TEST_POL, RESTIC_POL]) {
    const prefix = 700 * KiB;
    const data = Buffer.concat([prng('prefix', prefix), Buffer.alloc(3 * MiB)]);
    const lens = chunkLengths(data, pol);
    assert.equal(sum(lens), data.length);
    const ends = lens.map((_, i) => sum(lens.slice(0, i + 1)));
    const k = ends.findIndex((e) => e > prefix);
    const chunkStart = k === 0 ? 0 : ends[k - 1];
    assert.equal(ends[k], Math.max(prefix + 64, chunkStart + MIN_SIZE));
    for (const l of lens.slice(k + 1, -1)) assert.equal(l, MIN_SIZE);
    assert.ok(lens.at(-1)! <= MIN_SIZE);
  }
});

test('chunks never exceed 8 MiB: constant non-zero data is cut exactly at MaxSize', () => {
  // Window fingerprint of 64 copies of byte v: Σ v·x^(8j) mod P, computed with the naive helpers. Choose a
  // v whose fingerprint has non-zero low 20 bits, so no content-defined cut can ever happen.
  let v = 1;
  for (; v < 256; v++) {
    let f = 0n;
    for (let j = 0; j < 64; j++) f ^= BigInt(v) << BigInt(8 * j);
    if ((naiveMod(f, TEST_POL) & 0xfffffn) !== 0n) break;
  }
  const data = Buffer.alloc(20 * MiB, v);
  assert.deepEqual(chunkLengths(data, TEST_POL), [MAX_SIZE, MAX_SIZE, 20 * MiB - 2 * MAX_SIZE]);
  assert.deepEqual(streamedLengths(data, TEST_POL, () => 1 * MiB + 7), [MAX_SIZE, MAX_SIZE, 20 * MiB - 2 * MAX_SIZE]);
  const r = rng(99);
  assert.deepEqual(streamedLengths(data.subarray(0, 9 * MiB), TEST_POL, () => 1 + Math.floor(r() * 100)), [MAX_SIZE, 1 * MiB]);
  // Exactly MaxSize: one chunk, the boundary is reported at the very end of the range.
  const c = new Chunker(TEST_POL);
  assert.equal(c.next(data, 0, MAX_SIZE), MAX_SIZE);
});

test('streaming next() over random splits (incl. 1-byte buffers) gives the whole-buffer boundaries', () => {
  const data = mixedData('stream', 9 * MiB);
  for (const pol of [TEST_POL, RESTIC_POL]) {
    const whole = chunkLengths(data, pol);
    assert.ok(whole.length >= 5);
    assert.equal(sum(whole), data.length);
    // Every byte its own buffer.
    assert.deepEqual(streamedLengths(data, pol, () => 1), whole, '1-byte pieces');
    // Sizes around the 64-byte window and the skip region, and large pieces.
    const shapes: Array<[string, (r: () => number) => number]> = [
      ['tiny', (r) => 1 + Math.floor(r() * 8)],
      ['around-window', (r) => 60 + Math.floor(r() * 10)],
      ['mixed', (r) => [1, 63, 64, 65, 127, 4096, 65536, 1 * MiB][Math.floor(r() * 8)] + Math.floor(r() * 3)],
      ['large', (r) => Math.floor(r() * 3 * MiB)],
      ['any', (r) => Math.floor(Math.exp(r() * Math.log(4 * MiB)))],
    ];
    for (let trial = 0; trial < 10; trial++) {
      const [name, shape] = shapes[trial % shapes.length];
      const r = rng(1000 * trial + Number(pol & 0xffffn));
      assert.deepEqual(streamedLengths(data, pol, () => shape(r)), whole, `trial ${trial} (${name}) pol ${pol.toString(16)}`);
    }
  }
});

test('next() honours start/end within a larger buffer and validates the range', () => {
  const data = mixedData('range', 4 * MiB);
  const whole = chunkLengths(data, TEST_POL);
  // Embed the data in a bigger buffer with garbage around it.
  const big = Buffer.concat([prng('before', 1000), data, prng('after', 1000)]);
  const c = new Chunker(TEST_POL);
  const lens: number[] = [];
  let pos = 1000;
  const end = 1000 + data.length;
  let chunkStart = pos;
  while (pos < end) {
    const step = Math.min(end, pos + 333_333);
    let p = pos;
    while (p < step) {
      const cut = c.next(big, p, step);
      if (cut < 0) break;
      lens.push(cut - chunkStart);
      chunkStart = p = cut;
    }
    pos = step;
  }
  if (chunkStart < end) lens.push(end - chunkStart);
  assert.deepEqual(lens, whole);

  assert.equal(c.next(big, 5, 5), -1, 'empty range consumes nothing');
  assert.throws(() => c.next(big, 10, 5), RangeError);
  assert.throws(() => c.next(big, -1, 5), RangeError);
  assert.throws(() => c.next(big, 0, big.length + 1), RangeError);
});

test('reset() starts a new file: state from a previous partial file does not leak', () => {
  const a = mixedData('file-a', 3 * MiB);
  const b = mixedData('file-b', 5 * MiB);
  const expected = chunkLengths(b, RESTIC_POL);
  const c = new Chunker(RESTIC_POL);
  assert.equal(c.next(a, 0, 600 * KiB), -1); // part of file a, already in the hashed region
  assert.equal(c.pending, 600 * KiB);
  c.reset();
  const lens: number[] = [];
  let pos = 0;
  while (pos < b.length) {
    const cut = c.next(b, pos);
    if (cut < 0) { lens.push(b.length - pos); break; }
    lens.push(cut - pos);
    pos = cut;
  }
  assert.deepEqual(lens, expected);
});

test('two chunkers with different polynomials interleaved keep their own tables', () => {
  const data = mixedData('interleave', 6 * MiB);
  const e1 = chunkLengths(data, TEST_POL);
  const e2 = chunkLengths(data, RESTIC_POL);
  assert.notDeepEqual(e1, e2, 'the two polynomials cut differently');
  const c1 = new Chunker(TEST_POL);
  const c2 = new Chunker(RESTIC_POL);
  const l1: number[] = [], l2: number[] = [];
  let s1 = 0, s2 = 0;
  for (let off = 0; off < data.length; off += 100_000) {
    const end = Math.min(data.length, off + 100_000);
    for (const [c, l, which] of [[c1, l1, 1], [c2, l2, 2]] as const) {
      let p = off;
      while (p < end) {
        const cut = c.next(data, p, end);
        if (cut < 0) break;
        if (which === 1) { l.push(cut - s1); s1 = cut; } else { l.push(cut - s2); s2 = cut; }
        p = cut;
      }
    }
  }
  l1.push(data.length - s1);
  l2.push(data.length - s2);
  assert.deepEqual(l1, e1);
  assert.deepEqual(l2, e2);
});

test('chunkStream yields fresh, exact chunk Buffers that concatenate to the input', async () => {
  const data = mixedData('chunkStream', 10 * MiB);
  const expected = chunkLengths(data, TEST_POL);
  const r = rng(7);
  async function* pieces(): AsyncGenerator<Uint8Array> {
    for (let off = 0; off < data.length; ) {
      const n = 1 + Math.floor(r() * 200 * KiB);
      const piece = Buffer.from(data.subarray(off, off + n)); // a copy the generator "reuses" below
      yield piece;
      piece.fill(0xee); // a stream may recycle its buffer once the consumer moved on
      off += n;
    }
  }
  const chunks: Buffer[] = [];
  for await (const ch of chunkStream(pieces(), TEST_POL)) {
    assert.ok(Buffer.isBuffer(ch));
    assert.equal(ch.byteOffset, 0, 'owns its ArrayBuffer');
    assert.equal(ch.buffer.byteLength, ch.length, 'not a slice of a shared pool');
    chunks.push(ch);
  }
  assert.deepEqual(chunks.map((c) => c.length), expected);
  assert.ok(Buffer.concat(chunks).equals(data), 'chunks concatenate to the input');

  const none: Buffer[] = [];
  for await (const ch of chunkStream((async function* () { yield new Uint8Array(0); })(), TEST_POL)) none.push(ch);
  assert.deepEqual(none, []);

  const small: Buffer[] = [];
  for await (const ch of chunkStream((async function* () { yield Buffer.from('hello'); yield Buffer.from(' world'); })(), TEST_POL)) small.push(ch);
  assert.deepEqual(small.map(String), ['hello world']);

  await assert.rejects(async () => {
    for await (const _ of chunkStream((async function* () { yield 'text' as unknown as Uint8Array; })(), TEST_POL)) { /* drain */ }
  }, DmctlError);
});

test('Chunker rejects polynomials that are not of degree 53', () => {
  assert.throws(() => new Chunker(0x1da3358b4dc173n), DmctlError);
  assert.throws(() => new Chunker(0n), DmctlError);
  assert.throws(() => new Chunker(TEST_POL << 1n), DmctlError);
});
