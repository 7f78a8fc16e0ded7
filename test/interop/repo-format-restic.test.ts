// The on-disk objects restic 0.14 wrote, read by dmctl's format modules one by one: key file →
// master key, config, index (decoded and re-encoded to restic's exact bytes), every pack header
// (equal to what the index says, and the pack size formula), snapshots and locks. Plus the
// tamper checks of the sealing itself.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';
import { LocalBackend } from '../../src/storage/local.js';
import { listAll } from '../../src/storage/backend.js';
import { findKey, addKey, tryKey } from '../../src/repository/key-file.js';
import { loadConfig } from '../../src/repository/config-file.js';
import { decodeIndex, encodeIndex } from '../../src/repository/index-file.js';
import { readPackHeader, expectedPackSize, PackBuilder } from '../../src/repository/pack.js';
import { decodeUnpacked, encodeUnpacked } from '../../src/repository/unpacked.js';
import { open, seal, newMasterKey, sha256hex } from '../../src/repository/crypto.js';
import { IntegrityError, WrongPasswordError } from '../../src/core/errors.js';
import { decompress } from '../../src/repository/compression.js';

const PW = 'format-test-pw';

function restic(repo: string, args: string[], input?: Buffer): string {
  return execFileSync('restic', ['-r', repo, ...args], {
    env: { ...process.env, RESTIC_PASSWORD: PW, RESTIC_CACHE_DIR: path.join(repo, '..', 'cache') },
    input,
    stdio: ['pipe', 'pipe', 'pipe'],
    maxBuffer: 1 << 28,
  }).toString();
}

test('restic 0.14 objects decode with dmctl format modules, byte for byte where restic is deterministic', async () => {
  const base = mkdtempSync(path.join(os.tmpdir(), 'dm-format-'));
  const repo = path.join(base, 'repo');
  const src = path.join(base, 'src');
  mkdirSync(path.join(src, 'd'), { recursive: true });
  writeFileSync(path.join(src, 'small.txt'), 'hello restic\n');
  writeFileSync(path.join(src, 'd', 'random.bin'), crypto.randomBytes(3_000_000));
  writeFileSync(path.join(src, 'd', 'zeros.bin'), Buffer.alloc(1_500_000));
  restic(repo, ['init']);
  restic(repo, ['backup', src]);
  restic(repo, ['backup', '--stdin', '--stdin-filename', 'db.sql'], Buffer.from('x'.repeat(100_000)));

  const be = new LocalBackend(repo);
  // key file → master key; a wrong password opens nothing
  const { master, keyId } = await findKey(be, PW);
  assert.match(keyId, /^[0-9a-f]{64}$/);
  await assert.rejects(findKey(be, 'not-the-password'), WrongPasswordError);
  // key files are named by the SHA-256 of their bytes
  for (const f of await listAll(be, 'keys')) assert.equal(sha256hex(await be.load('keys', f.name)), f.name);

  // config: restic's own reading of it must agree with ours
  const cfg = await loadConfig(be, master);
  const resticCfg = JSON.parse(restic(repo, ['cat', 'config']));
  assert.equal(cfg.version, resticCfg.version);
  assert.equal(cfg.id, resticCfg.id);
  assert.equal(cfg.chunkerPolynomial.toString(16), resticCfg.chunker_polynomial);

  // index files: name = SHA-256, 0x02+zstd inside, JSON that re-encodes to the very same bytes
  const packSizes = new Map((await listAll(be, 'data')).map((f) => [f.name, f.size]));
  let indexedPacks = 0;
  for (const f of await listAll(be, 'index')) {
    const raw = await be.load('index', f.name);
    const plainOuter = open(master, raw);
    assert.equal(plainOuter[0], 0x02, 'v2 index files start with the zstd marker');
    const json = await decodeUnpacked(master, raw, 2, 'index', f.name);
    assert.deepEqual(json, await decompress(plainOuter.subarray(1)));
    const idx = decodeIndex(json);
    assert.ok(encodeIndex(idx).equals(json), 'decode → encode reproduces restic\'s index bytes');
    for (const p of idx.packs) {
      indexedPacks++;
      const size = packSizes.get(p.id);
      assert.ok(size !== undefined, `pack ${p.id} listed`);
      // pack size formula restic's prune checks, and the header equals the index entry for entry
      assert.equal(expectedPackSize(p.blobs), size);
      const header = await readPackHeader(be, master, p.id, size!);
      const key = (b: { id: string; type: string; offset: number; length: number; uncompressedLength: number }) =>
        `${b.type}:${b.id}:${b.offset}:${b.length}:${b.uncompressedLength}`;
      assert.deepEqual(header.map(key).sort(), p.blobs.map(key).sort());
      // the pack's name is the SHA-256 of its bytes
      assert.equal(sha256hex(await be.load('data', p.id)), p.id);
    }
  }
  assert.equal(indexedPacks, packSizes.size);

  // snapshots: decrypt + verify name; the tree restic reports is the one stored
  const snaps = JSON.parse(restic(repo, ['snapshots', '--json'])) as { id: string; tree: string }[];
  assert.equal(snaps.length, 2);
  for (const s of snaps) {
    const json = JSON.parse((await decodeUnpacked(master, await be.load('snapshots', s.id), 2, 'snapshot', s.id)).toString());
    assert.equal(json.tree, s.tree);
  }

  // a damaged index file is refused, naming what is wrong
  const anIndex = (await listAll(be, 'index'))[0].name;
  const bad = Buffer.from(await be.load('index', anIndex));
  bad[bad.length >> 1] ^= 1;
  await assert.rejects(decodeUnpacked(master, bad, 2, 'index', anIndex), IntegrityError);
  await assert.rejects(decodeUnpacked(master, bad, 2, 'index'), /MAC mismatch/);
});

test('objects dmctl seals are read by restic: a key it adds, an index and a pack it writes', async () => {
  const base = mkdtempSync(path.join(os.tmpdir(), 'dm-format2-'));
  const repo = path.join(base, 'repo');
  restic(repo, ['init']);
  const be = new LocalBackend(repo);
  const { master } = await findKey(be, PW);
  // a second key, added by dmctl, opens the repository for restic
  const newId = await addKey(be, master, 'second-password');
  assert.ok(await tryKey(be, newId, 'second-password'));
  const out = execFileSync('restic', ['-r', repo, 'key', 'list', '--json'], { env: { ...process.env, RESTIC_PASSWORD: 'second-password' } }).toString();
  // restic lists short IDs and marks the key that opened it
  const keys = JSON.parse(out) as { id: string; current: boolean }[];
  assert.equal(keys.length, 2);
  assert.ok(keys.some((k) => k.current && newId.startsWith(k.id)));

  // a pack with two data blobs (one compressed, one not) and an index for it: restic check --read-data
  const blobs = [crypto.randomBytes(200_000), Buffer.from('compressible '.repeat(10_000))];
  const pb = new PackBuilder('data');
  const zstd = await import('../../src/repository/compression.js');
  pb.add(sha256hex(blobs[0]), seal(master, blobs[0]), 0);
  pb.add(sha256hex(blobs[1]), seal(master, await zstd.compress(blobs[1])), blobs[1].length);
  const { id, data, blobs: packed } = pb.finish(master);
  await be.save('data', id, data);
  assert.equal(expectedPackSize(packed), data.length);
  const idx = await encodeUnpacked(master, encodeIndex({ packs: [{ id, blobs: packed }] }), 2);
  await be.save('index', idx.id, idx.data);
  const check = execFileSync('restic', ['-r', repo, 'check', '--read-data'], { env: { ...process.env, RESTIC_PASSWORD: PW } }).toString();
  assert.match(check, /no errors were found/);
  const listed = execFileSync('restic', ['-r', repo, 'list', 'blobs'], { env: { ...process.env, RESTIC_PASSWORD: PW } }).toString();
  for (const b of blobs) assert.ok(listed.includes(sha256hex(b)));
  // restic can read each blob back
  for (const b of blobs) {
    const got = execFileSync('restic', ['-r', repo, 'cat', 'blob', sha256hex(b)], { env: { ...process.env, RESTIC_PASSWORD: PW }, maxBuffer: 1 << 26 });
    assert.ok(got.equals(b));
  }
});

test('sealing: MAC over the ciphertext, any flipped bit or wrong key is refused, IVs never repeat', () => {
  const k = newMasterKey();
  const other = newMasterKey();
  const msg = crypto.randomBytes(1000);
  const box = seal(k, msg);
  assert.equal(box.length, msg.length + 32);
  assert.ok(open(k, box).equals(msg));
  for (const i of [0, 15, 16, 500, box.length - 17, box.length - 1]) {
    const bad = Buffer.from(box);
    bad[i] ^= 0x80;
    assert.throws(() => open(k, bad), IntegrityError, `bit flipped at ${i}`);
  }
  assert.throws(() => open(other, box), IntegrityError);
  assert.throws(() => open(k, box.subarray(0, 31)), /too short/);
  const ivs = new Set<string>();
  for (let i = 0; i < 5000; i++) ivs.add(seal(k, msg.subarray(0, 1)).subarray(0, 16).toString('hex'));
  assert.equal(ivs.size, 5000);
  // an empty plaintext is a valid object of exactly 32 bytes
  const empty = seal(k, Buffer.alloc(0));
  assert.equal(empty.length, 32);
  assert.equal(open(k, empty).length, 0);
});
