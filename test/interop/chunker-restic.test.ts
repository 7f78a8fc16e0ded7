// Interop: our chunker must cut files exactly where restic 0.14 does.
//
// The oracle is the real restic binary: for two fresh repositories (two random polynomials chosen by
// `restic init`), restic backs up a set of deterministic files; the file nodes' `content` lists in the
// snapshot tree are the SHA-256 IDs of restic's chunks, in order. Our chunks' SHA-256s must equal them.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

import { chunkLengths, chunkStream, MAX_SIZE, MIN_SIZE } from '../../src/chunker/chunker.js';
import { formatPolynomial, isIrreducible, parsePolynomial } from '../../src/chunker/polynomial.js';

const execFileP = promisify(execFile);
const RESTIC = process.env.RESTIC_BIN ?? '/usr/bin/restic';
const MB = 1_000_000;
const MiB = 1024 * 1024;

let tmp = '';

before(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'dmctl-chunker-interop-'));
});

after(async () => {
  if (tmp) await fsp.rm(tmp, { recursive: true, force: true });
});

/** Runs restic against one repository with a clean environment (no inherited RESTIC_* settings). */
async function restic(repo: string, args: string[]): Promise<string> {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('RESTIC_')) env[k] = v;
  env.RESTIC_REPOSITORY = repo;
  env.RESTIC_PASSWORD = 'interop-test-password';
  env.RESTIC_CACHE_DIR = path.join(tmp, 'cache');
  const { stdout } = await execFileP(RESTIC, args, {
    env,
    maxBuffer: 64 * MiB,
  });
  return stdout;
}

/** Deterministic pseudo-random bytes: AES-256-CTR keystream keyed by SHA-256(seed). */
function prng(seed: string, n: number): Buffer {
  const key = createHash('sha256').update(seed).digest();
  return createCipheriv('aes-256-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(n));
}

function bitLen(x: bigint): number {
  return x === 0n ? 0 : x.toString(2).length;
}

function naiveMod(x: bigint, m: bigint): bigint {
  const dm = bitLen(m);
  for (let d = bitLen(x); d >= dm; d = bitLen(x)) x ^= m << BigInt(d - dm);
  return x;
}

/** Makes the 64-byte window ending at data[last] have a fingerprint with low 20 bits zero under P (see unit test). */
function craftCutAt(data: Buffer, last: number, P: bigint): void {
  data[last] = data[last - 1] = data[last - 2] = 0;
  const r = naiveMod(BigInt('0x' + data.subarray(last - 63, last + 1).toString('hex')), P);
  data[last] = Number(r & 0xffn);
  data[last - 1] = Number((r >> 8n) & 0xffn);
  data[last - 2] = Number((r >> 16n) & 0x0fn) | (data[last - 2] & 0xf0);
}

/** The files every repository backs up (same bytes for both repositories). */
function commonFiles(): Map<string, Buffer> {
  const files = new Map<string, Buffer>();
  // Reference §11.5's mix: random, zero run, short-period text (no content cut → MaxSize), random, tail.
  files.set('mixed-a.bin', Buffer.concat([
    prng('a1', 3 * MB),
    Buffer.alloc(2 * MB),
    Buffer.from('abcdefghijk'.repeat(1_000_000)),
    prng('a2', 2.5 * MB),
    Buffer.from('tail'),
  ]));
  // Alternating random segments, log-like text and zero runs of many lengths (~20 MB).
  {
    const parts: Buffer[] = [];
    let total = 0;
    for (let k = 0; total < 20 * MB; k++) {
      let p: Buffer;
      switch (k % 3) {
        case 0: p = prng(`b${k}`, 200_000 + ((k * 7919) % 1_900_000)); break;
        case 1: {
          const lines: string[] = [];
          for (let n = 0; n < 2000 + (k % 5) * 3000; n++) lines.push(`2026-11-21T13:${String(n % 60).padStart(2, '0')}:00Z worker-${k} processed item ${n * 31 + k} ok\n`);
          p = Buffer.from(lines.join(''));
          break;
        }
        default: p = Buffer.alloc([1, 63, 64, 65, 4096, 600_000, 1_300_000][k % 7]); break;
      }
      parts.push(p);
      total += p.length;
    }
    files.set('mixed-b.log', Buffer.concat(parts));
  }
  // Mostly random with a long repeated sentence and a zero run straddling chunk boundaries (~20 MB).
  files.set('mixed-c.dat', Buffer.concat([
    prng('c1', 7 * MB + 12345),
    Buffer.from('The quick brown fox jumps over the lazy dog. '.repeat(150_000)),
    prng('c2', 4 * MB),
    Buffer.alloc(1_000_001),
    prng('c3', 1 * MB + 3),
  ]));
  files.set('small.bin', prng('small', 300_000));
  files.set('exact-min.bin', prng('exact-min', MIN_SIZE));
  files.set('empty', Buffer.alloc(0));
  return files;
}

/** Files specific to one polynomial: fingerprint hits exactly at L = MinSize and at L = MinSize − 1. */
function edgeFiles(P: bigint): Map<string, Buffer> {
  const files = new Map<string, Buffer>();
  const atMin = prng(`edge-min-${P}`, 3 * MB);
  craftCutAt(atMin, MIN_SIZE - 1, P);
  files.set('edge-at-min.bin', atMin);
  const below = prng(`edge-below-${P}`, 3 * MB);
  craftCutAt(below, MIN_SIZE - 2, P);
  files.set('edge-below-min.bin', below);
  return files;
}

interface TreeNode {
  name: string;
  type: string;
  subtree?: string;
  content?: string[] | null;
}

async function loadTree(repo: string, id: string): Promise<TreeNode[]> {
  return (JSON.parse(await restic(repo, ['cat', 'blob', id])) as { nodes: TreeNode[] }).nodes;
}

/** Our chunk IDs for one file, through the streaming API over a real file stream. */
async function ourChunkIds(file: string, P: bigint): Promise<{ ids: string[]; lengths: number[] }> {
  const ids: string[] = [];
  const lengths: number[] = [];
  for await (const chunk of chunkStream(fs.createReadStream(file, { highWaterMark: 64 * 1024 }), P)) {
    ids.push(createHash('sha256').update(chunk).digest('hex'));
    lengths.push(chunk.length);
  }
  return { ids, lengths };
}

const seenPolynomials: bigint[] = [];
const allLengths: number[] = [];

for (const repoName of ['repo-1', 'repo-2']) {
  test(`chunk IDs equal restic 0.14's for every file (${repoName}, its own random polynomial)`, async () => {
    const repo = path.join(tmp, repoName);
    await restic(repo, ['init']);

    const config = JSON.parse(await restic(repo, ['cat', 'config'])) as { chunker_polynomial: string };
    const hex = config.chunker_polynomial;
    const P = parsePolynomial(hex);
    assert.equal(formatPolynomial(P), hex, 'format(parse(x)) reproduces restic config text');
    assert.ok(isIrreducible(P));
    assert.ok(!seenPolynomials.includes(P), 'each repository has its own polynomial');
    seenPolynomials.push(P);

    const dataDir = path.join(tmp, `${repoName}-data`);
    await fsp.mkdir(dataDir);
    const files = new Map([...commonFiles(), ...edgeFiles(P)]);
    for (const [name, bytes] of files) await fsp.writeFile(path.join(dataDir, name), bytes);

    await restic(repo, ['backup', '--host', 'interop', dataDir]);
    const snaps = JSON.parse(await restic(repo, ['snapshots', '--json'])) as Array<{ id: string }>;
    assert.equal(snaps.length, 1);
    const snapshot = JSON.parse(await restic(repo, ['cat', 'snapshot', snaps[0].id])) as { tree: string };

    // Walk from the root tree down the absolute path of dataDir.
    let nodes = await loadTree(repo, snapshot.tree);
    for (const comp of (await fsp.realpath(dataDir)).split(path.sep).filter(Boolean)) {
      const dir = nodes.find((n) => n.name === comp && n.type === 'dir');
      assert.ok(dir?.subtree, `directory ${comp} in snapshot tree`);
      nodes = await loadTree(repo, dir.subtree);
    }

    assert.deepEqual(nodes.map((n) => n.name).sort(), [...files.keys()].sort());
    for (const [name, bytes] of files) {
      const node = nodes.find((n) => n.name === name)!;
      assert.equal(node.type, 'file');
      const expected = node.content ?? [];
      const ours = await ourChunkIds(path.join(dataDir, name), P);
      assert.deepEqual(ours.ids, expected, `${name}: chunk IDs (our lengths ${ours.lengths.join(',')})`);
      // The whole-buffer helper agrees with the stream.
      assert.deepEqual(chunkLengths(bytes, P), ours.lengths, `${name}: chunkLengths`);
      allLengths.push(...ours.lengths);
      if (name === 'edge-at-min.bin') assert.equal(ours.lengths[0], MIN_SIZE);
      if (name === 'edge-below-min.bin') assert.ok(ours.lengths[0] > MIN_SIZE);
    }
  });
}

test('the interop data exercised every kind of boundary', () => {
  assert.equal(seenPolynomials.length, 2, 'both repositories ran');
  assert.ok(allLengths.includes(MAX_SIZE), 'a MaxSize cut');
  assert.ok(allLengths.filter((l) => l === MIN_SIZE).length >= 4, 'MinSize cuts (zero runs, exact edge)');
  assert.ok(allLengths.some((l) => l > MIN_SIZE && l < MAX_SIZE), 'content-defined cuts');
  assert.ok(allLengths.length >= 60, `many chunks compared (${allLengths.length})`);
});
