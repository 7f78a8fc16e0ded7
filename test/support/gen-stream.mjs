#!/usr/bin/env node
// Deterministic test data on stdout, fast enough for multi-GB streams (AES-256-CTR keystream, about
// 1 GB/s on one core), with back-pressure on the pipe.
//
//   node gen-stream.mjs SIZE [--seed S] [--kind random|dump] [--sha256-file FILE]
//
// SIZE: bytes, or with a K/M/G suffix (powers of 1024; "50M", "4G"). The same SIZE, seed and kind give
// the same bytes on every machine. --kind random (default) is incompressible; --kind dump looks like
// a text database dump (SQL lines with hex values), compresses about 2:1 and still deduplicates
// nothing across seeds. --sha256-file writes the SHA-256 (hex) of everything written once done.
import crypto from 'node:crypto';
import fs from 'node:fs';

function usage(msg) {
  process.stderr.write(`gen-stream: ${msg}\nusage: gen-stream.mjs SIZE [--seed S] [--kind random|dump] [--sha256-file FILE]\n`);
  process.exit(2);
}

export function parseSize(s) {
  const m = /^(\d+)([KMG]?)$/i.exec(String(s));
  if (!m) return undefined;
  const mult = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 }[m[2].toUpperCase()];
  return Number(m[1]) * mult;
}

const args = process.argv.slice(2);
let size;
let seed = '1';
let kind = 'random';
let shaFile;
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (a === '--seed') seed = args[++i] ?? usage('--seed needs a value');
  else if (a === '--kind') kind = args[++i] ?? usage('--kind needs a value');
  else if (a === '--sha256-file') shaFile = args[++i] ?? usage('--sha256-file needs a value');
  else if (size === undefined) size = parseSize(a) ?? usage(`bad size ${a}`);
  else usage(`unexpected argument ${a}`);
}
if (size === undefined) usage('SIZE missing');
if (kind !== 'random' && kind !== 'dump') usage(`unknown kind ${kind}`);

const key = crypto.createHash('sha256').update(`gen-stream key ${seed}`).digest();
const iv = crypto.createHash('sha256').update(`gen-stream iv ${seed}`).digest().subarray(0, 16);
const cipher = crypto.createCipheriv('aes-256-ctr', key, iv);
const hash = shaFile ? crypto.createHash('sha256') : undefined;

const BLOCK = 1 << 20;
const zeros = Buffer.alloc(kind === 'dump' ? BLOCK / 2 : BLOCK);
let rowNo = 0;

/** Next BLOCK bytes of the stream. */
function nextBlock() {
  const raw = cipher.update(zeros);
  if (kind === 'random') return raw;
  // "INSERT INTO t VALUES (<n>,'<hex>');\n" rows over hex text of the keystream: the hex is
  // generated in one call (fast); rows are stamped in by overwriting fixed positions.
  const out = Buffer.from(raw.toString('hex'), 'latin1');
  const ROW = 128;
  for (let o = 0; o + ROW <= out.length; o += ROW) {
    const head = `INSERT INTO t VALUES (${rowNo++},'`;
    out.write(head, o, 'latin1');
    out.write("');\n", o + ROW - 4, 'latin1');
  }
  return out;
}

const out = fs.createWriteStream(null, { fd: 1, highWaterMark: 4 * BLOCK });
out.on('error', (err) => {
  // The reader went away (EPIPE): a killed consumer is normal in tests.
  if (err.code === 'EPIPE') process.exit(0);
  throw err;
});

let left = size;
function pump() {
  while (left > 0) {
    let b = nextBlock();
    if (b.length > left) b = b.subarray(0, left);
    left -= b.length;
    hash?.update(b);
    if (!out.write(b)) {
      out.once('drain', pump);
      return;
    }
  }
  out.end(() => {
    if (shaFile) fs.writeFileSync(shaFile, hash.digest('hex') + '\n');
  });
}
pump();
