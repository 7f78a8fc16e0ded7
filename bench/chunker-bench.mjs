#!/usr/bin/env node
// Throughput of the content-defined chunker (build first: npx tsc -p .).
//
//   node bench/chunker-bench.mjs [MiB=256] [rounds=3]
//
// Feeds ~256 MiB of pseudo-random data through Chunker.next() in three ways — one whole buffer, 1 MiB
// pieces and 64 KiB pieces (what fs.createReadStream hands out) — and through chunkStream(), and prints MB/s
// (10^6 bytes per second, best of `rounds`) for each, by wall clock and by this process's CPU time (user+sys,
// which stays meaningful when other processes compete for the cores). Single-threaded.

import { randomFillSync } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));
const { Chunker, chunkStream } = await import(path.join(here, '..', 'dist', 'src', 'chunker', 'chunker.js'));

const mib = Number(process.argv[2] ?? 256);
const rounds = Number(process.argv[3] ?? 3);
const size = mib * 1024 * 1024;
const pol = 0x3da3358b4dc173n; // restic's documented test polynomial

// Pseudo-random data: crypto.randomFillSync is fast and has no structure the chunker could exploit.
const data = Buffer.allocUnsafeSlow(size);
for (let off = 0; off < size; off += 1 << 30) randomFillSync(data, off, Math.min(1 << 30, size - off));
const plain = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);

function runNext(pieceSize, input = plain) {
  const c = new Chunker(pol);
  let chunks = 0;
  for (let off = 0; off < size; off += pieceSize) {
    const end = Math.min(size, off + pieceSize);
    let pos = off;
    while (pos < end) {
      const cut = c.next(input, pos, end);
      if (cut < 0) break;
      chunks++;
      pos = cut;
    }
  }
  return chunks + (c.pending > 0 ? 1 : 0);
}

async function runStream(pieceSize) {
  async function* pieces() {
    for (let off = 0; off < size; off += pieceSize) yield data.subarray(off, Math.min(size, off + pieceSize));
  }
  let chunks = 0;
  for await (const _ of chunkStream(pieces(), pol)) chunks++;
  return chunks;
}

function fmt(bytes, ms) {
  return ((bytes / 1e6) / (ms / 1000)).toFixed(0);
}

const cases = [
  ['next() whole buffer', () => runNext(size)],
  ['next() 1 MiB pieces', () => runNext(1 << 20)],
  ['next() 64 KiB pieces', () => runNext(64 << 10)],
  ['next() 64 KiB, Buffer input', () => runNext(64 << 10, data)],
  ['chunkStream 64 KiB pieces', () => runStream(64 << 10)],
];

console.log(`chunker bench: ${mib} MiB pseudo-random data, node ${process.version}, best of ${rounds}`);
// Warm up the JIT on a small slice so the first measured round is not the interpreter.
{
  const c = new Chunker(pol);
  for (let k = 0; k < 4; k++) { c.reset(); let p = 0; while (p < 8 << 20) { const x = c.next(plain, p, 8 << 20); if (x < 0) break; p = x; } }
}
for (const [name, fn] of cases) {
  let best = Infinity;
  let bestCpu = Infinity;
  let chunks = 0;
  for (let r = 0; r < rounds; r++) {
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    chunks = await fn();
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    const cu = process.cpuUsage(c0);
    best = Math.min(best, ms);
    bestCpu = Math.min(bestCpu, (cu.user + cu.system) / 1000);
  }
  console.log(`${name.padEnd(28)} ${fmt(size, best).padStart(6)} MB/s wall  ${fmt(size, bestCpu).padStart(6)} MB/s cpu  (${best.toFixed(0)} ms, ${chunks} chunks, avg ${(size / chunks / 1024).toFixed(0)} KiB)`);
}
