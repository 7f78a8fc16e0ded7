// Polynomials over GF(2) for the content-defined chunker (restic chunker v0.4.0 semantics).
//
// A polynomial is a bigint bit set: bit i is the coefficient of x^i. Addition is XOR. BigInt is fine here:
// these routines run once per repository (init, config load, table construction), never per byte.

import { randomBytes } from 'node:crypto';
import { DmctlError, EXIT_CODES, IntegrityError } from '../core/errors.js';

/** Degree every chunker polynomial must have. */
export const POLYNOMIAL_DEGREE = 53;

/** Upper bound of attempts for `randomPolynomial` (same bound restic uses). */
const MAX_RANDOM_TRIES = 1_000_000;

/** Degree of p (index of the highest set bit); -1 for the zero polynomial. */
export function degree(p: bigint): number {
  if (p < 0n) throw new RangeError('polynomial must be non-negative');
  if (p === 0n) return -1;
  // toString(2) is plenty fast for values this small and avoids a bit-by-bit loop.
  return p.toString(2).length - 1;
}

/** Remainder of x divided by d (both polynomials over GF(2)). */
export function polyMod(x: bigint, d: bigint): bigint {
  const dd = degree(d);
  if (dd < 0) throw new RangeError('division by the zero polynomial');
  let dx = degree(x);
  while (dx >= dd) {
    x ^= d << BigInt(dx - dd);
    dx = degree(x);
  }
  return x;
}

/** Carry-less product a·b. */
export function polyMul(a: bigint, b: bigint): bigint {
  let r = 0n;
  let shift = 0n;
  while (b > 0n) {
    if (b & 1n) r ^= a << shift;
    b >>= 1n;
    shift++;
  }
  return r;
}

/** a·b mod m. */
export function polyMulMod(a: bigint, b: bigint, m: bigint): bigint {
  return polyMod(polyMul(a, b), m);
}

/** Greatest common divisor of two polynomials. */
export function polyGcd(a: bigint, b: bigint): bigint {
  while (b !== 0n) {
    const r = polyMod(a, b);
    a = b;
    b = r;
  }
  return a;
}

/**
 * Ben-Or irreducibility test: p of degree d is irreducible iff for every i = 1 … ⌊d/2⌋,
 * gcd(p, x^(2^i) − x mod p) = 1. Constants (degree ≤ 0) are not irreducible.
 */
export function isIrreducible(p: bigint): boolean {
  const d = degree(p);
  if (d < 1) return false;
  let xPow = 2n; // x, then x^2, x^4, … x^(2^i) mod p
  for (let i = 1; i <= d >> 1; i++) {
    xPow = polyMulMod(xPow, xPow, p);
    // x^(2^i) − x (subtraction is XOR in GF(2)), reduced mod p.
    const q = polyMod(xPow ^ 2n, p);
    if (polyGcd(p, q) !== 1n) return false;
  }
  return true;
}

/**
 * A fresh random irreducible polynomial of degree 53, chosen exactly the way `restic init` does:
 * 8 random bytes read as a little-endian uint64, bits 0…53 kept, bits 53 and 0 set, accepted when irreducible.
 */
export function randomPolynomial(): bigint {
  const mask = (1n << 54n) - 1n;
  const top = 1n << 53n;
  for (let i = 0; i < MAX_RANDOM_TRIES; i++) {
    const p = (randomBytes(8).readBigUInt64LE(0) & mask) | top | 1n;
    if (isIrreducible(p)) return p;
  }
  // Practically unreachable (about 1 in 37 candidates is irreducible); only a broken RNG gets here.
  throw new DmctlError('chunker-polynomial', 'could not find a random irreducible polynomial', {
    hint: 'the system random number generator looks broken',
    exitCode: EXIT_CODES.FAILURE,
  });
}

/**
 * Parses the `chunker_polynomial` field of a repository config (hex digits, no `0x`, as Go's strconv writes it)
 * and checks that it is a degree-53 irreducible polynomial. Throws IntegrityError otherwise.
 */
export function parsePolynomial(hex: string): bigint {
  if (typeof hex !== 'string' || !/^[0-9a-fA-F]{1,16}$/.test(hex)) {
    throw new IntegrityError(`invalid chunker polynomial ${JSON.stringify(String(hex).slice(0, 40))} in repository config`, {
      hint: 'the config file is damaged: chunker_polynomial must be hexadecimal digits without 0x',
    });
  }
  const p = BigInt('0x' + hex);
  const d = degree(p);
  if (d !== POLYNOMIAL_DEGREE) {
    throw new IntegrityError(`chunker polynomial ${hex} in repository config has degree ${d}, expected ${POLYNOMIAL_DEGREE}`, {
      hint: 'the config file is damaged or was not written by restic/dmctl',
    });
  }
  if (!isIrreducible(p)) {
    throw new IntegrityError(`chunker polynomial ${hex} in repository config is not irreducible`, {
      hint: 'the config file is damaged or was not written by restic/dmctl',
    });
  }
  return p;
}

/** Formats a polynomial the way the repository config stores it: lowercase hex, no `0x`, no padding. */
export function formatPolynomial(p: bigint): string {
  if (p < 0n) throw new RangeError('polynomial must be non-negative');
  return p.toString(16);
}
