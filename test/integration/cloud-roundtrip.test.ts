// The same full repository round trip through the real CLI on every backend: local, S3 on Ceph
// radosgw, Azure on azurite, GCS on Firebase's emulator and REST on `rclone serve restic`. Each run:
// repo init, backup of a tree (hundreds of files, one > 8 MiB, nested dirs, a symlink),
// backup-stream of a 20 MiB generated stream, snapshots --json, restore --verify compared with the
// source, restore-stream compared by SHA-256, a second backup, forget --keep-last 1 --prune (the data
// only the forgotten snapshot held is gone from the storage), then check --read-data.
// Credentials reach dmctl only through the environment each provider documents.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { promises as fsp } from 'node:fs';
import { openBackend, BackendOptions } from '../../src/storage/open.js';
import { listAll } from '../../src/storage/backend.js';
import { startRadosgw, startAzurite, startGcsEmulator, startRcloneRestic, RadosgwServer, AzuriteServer, GcsEmulator, RestServer, GCS_CLIENT_ENV, startTogether } from '../support/servers.js';
import { dmctl, json, toolEnv, ok, ToolEnv, RunResult } from '../support/run.js';
import { dmctlPipe } from '../support/proc.js';
import { pseudoRandom, treeManifest, diffManifests, Manifest } from '../support/fixtures.js';

Object.assign(process.env, GCS_CLIENT_ENV);

const tmpRoot = await fsp.mkdtemp(path.join(os.tmpdir(), 'dmctl-cloudrt-'));
const SRC = path.join(tmpRoot, 'src');
const STREAM_SIZE = 20 * 1024 * 1024;
const BIG_SIZE = 9 * 1024 * 1024 + 4321;
const PASSWORD = 'cloud-roundtrip-pw';

let rgw: RadosgwServer;
let azurite: AzuriteServer;
let gcs: GcsEmulator;
let rest: RestServer;

/** The source tree: 320 small files in nested folders, one 9 MiB file, a symlink, an empty dir. */
async function makeTree(root: string): Promise<number> {
  let files = 0;
  const put = async (rel: string, data: Buffer | string) => {
    await fsp.mkdir(path.dirname(path.join(root, rel)), { recursive: true });
    await fsp.writeFile(path.join(root, rel), data);
    files++;
  };
  for (let i = 0; i < 320; i++) {
    const dir = ['', 'a', 'a/b', 'a/b/c', 'a/b/c/d', 'e/f'][i % 6];
    const size = (i * 7919) % 24_000;
    // Half text that compresses, half incompressible bytes.
    const data = i % 2 === 0 ? Buffer.from(`line ${i} of a text file\n`.repeat(Math.ceil(size / 25)).slice(0, size)) : pseudoRandom(`small-${i}`, size);
    await put(path.join(dir, `file-${String(i).padStart(3, '0')}.${i % 2 ? 'bin' : 'txt'}`), data);
  }
  await put('big/large.bin', Buffer.concat([pseudoRandom('large', BIG_SIZE - (1 << 20)), Buffer.alloc(1 << 20)]));
  await put('empty-file', '');
  await fsp.symlink('a/b/file-002.txt', path.join(root, 'link-to-file'));
  await fsp.symlink('../../big/large.bin', path.join(root, 'a', 'b', 'uplink'));
  await fsp.mkdir(path.join(root, 'empty-dir'));
  // Fixed times on every entry (links too) so the restored tree is compared including mtimes.
  const stamp = async (rel: string): Promise<void> => {
    const p = path.join(root, rel);
    await fsp.lutimes(p, 1_700_000_000.25, 1_700_000_000.25);
    if ((await fsp.lstat(p)).isDirectory()) for (const n of await fsp.readdir(p)) await stamp(path.join(rel, n));
  };
  await stamp('.');
  return files;
}

let srcManifest: Manifest;
let fileCount = 0;

before(async () => {
  const started = startTogether([startRadosgw(), startAzurite(), startGcsEmulator(), startRcloneRestic(path.join(tmpRoot, 'rest-data'))]);
  started.catch(() => {}); // awaited below; not an unhandled rejection while the tree is made
  fileCount = await makeTree(SRC);
  srcManifest = await treeManifest(SRC);
  [rgw, azurite, gcs, rest] = await started;
}, { timeout: 400_000 });

after(async () => {
  await Promise.allSettled([rgw?.stop(), azurite?.stop(), gcs?.stop(), rest?.stop()]);
  await fsp.rm(tmpRoot, { recursive: true, force: true });
});

interface Target {
  name: string;
  /** Repository URL and the environment dmctl needs for it. */
  repo(): string;
  env(): Record<string, string | undefined>;
  /** The same storage opened in-process (to measure what prune removed). */
  backendOpts(): BackendOptions;
}

// Variables a developer's shell might carry that would change which credentials dmctl picks.
const CLEAN_ENV = {
  AWS_PROFILE: undefined, AWS_SESSION_TOKEN: undefined, AZURE_STORAGE_CONNECTION_STRING: undefined, AZURE_ACCOUNT_SAS: undefined,
  GOOGLE_APPLICATION_CREDENTIALS: undefined, STORAGE_EMULATOR_HOST: undefined,
};

const targets: Target[] = [
  {
    name: 'local',
    repo: () => path.join(tmpRoot, 'local-repo'),
    env: () => ({}),
    backendOpts: () => ({}),
  },
  {
    name: 's3 (radosgw)',
    repo: () => `s3:${rgw.endpoint}/roundtrip/nested/prefix`,
    env: () => ({ AWS_ACCESS_KEY_ID: rgw.accessKeyId, AWS_SECRET_ACCESS_KEY: rgw.secretAccessKey }),
    backendOpts: () => ({ profile: { s3: { accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey } } }),
  },
  {
    name: 'azure (azurite)',
    repo: () => 'azure:roundtrip:/nested/prefix',
    // restic's variable names for account and key, the endpoint from AZURE_STORAGE_ENDPOINT
    env: () => ({ AZURE_ACCOUNT_NAME: azurite.accountName, AZURE_ACCOUNT_KEY: azurite.accountKey, AZURE_STORAGE_ENDPOINT: azurite.endpoint }),
    backendOpts: () => ({ env: { AZURE_ACCOUNT_NAME: azurite.accountName, AZURE_ACCOUNT_KEY: azurite.accountKey, AZURE_STORAGE_ENDPOINT: azurite.endpoint } }),
  },
  {
    name: 'gcs (emulator)',
    repo: () => 'gs:roundtrip:/nested/prefix',
    // host:port as the Go client (restic) takes it
    env: () => ({ ...GCS_CLIENT_ENV, STORAGE_EMULATOR_HOST: `127.0.0.1:${gcs.port}`, GOOGLE_PROJECT_ID: 'dmctl-test' }),
    backendOpts: () => ({ env: { STORAGE_EMULATOR_HOST: `127.0.0.1:${gcs.port}`, GOOGLE_PROJECT_ID: 'dmctl-test' } }),
  },
  {
    name: 'rest (rclone serve restic)',
    repo: () => `rest:${rest.url}roundtrip/`,
    env: () => ({}),
    backendOpts: () => ({}),
  },
];

const show = (r: RunResult) => `${r.command} → ${r.code}\n${r.stderr.slice(-3000)}`;

interface SnapshotJson { id: string; short_id: string; paths: string[]; tree: string; hostname: string; time: string }

async function dataBytes(t: Target): Promise<number> {
  const be = await openBackend(t.repo(), t.backendOpts());
  try {
    return (await listAll(be, 'data')).reduce((n, f) => n + f.size, 0);
  } finally {
    await be.close();
  }
}

for (const t of targets) {
  describe(`round trip on ${t.name}`, () => {
    let tool: ToolEnv;
    const run = (args: string[]) => dmctl(tool, args, { env: { ...CLEAN_ENV, ...t.env() }, timeoutMs: 120_000 });
    let treeSnap: SnapshotJson;
    let streamSnap: SnapshotJson;
    let streamSha = '';
    const streamShaFile = path.join(tmpRoot, `stream-${t.name.split(' ')[0]}.sha256`);

    before(() => {
      tool = toolEnv(t.repo(), PASSWORD, path.join(tmpRoot, `home-${t.name.split(' ')[0]}`));
    });

    it('repo init creates the repository (and its bucket); a second init is refused', async () => {
      const r = await run(['repo', 'init']);
      assert.equal(r.code, 0, show(r));
      assert.match(r.stdout.toString(), /created repository [0-9a-f]{10} \(version 2\)/);
      const again = await run(['repo', 'init']);
      assert.notEqual(again.code, 0, 'a second init over an existing repository fails');
      assert.match(again.stderr, /already exists/);
    });

    it('backs up the tree and a 20 MiB stream', async () => {
      const r = await run(['backup', '-q', SRC]);
      assert.equal(r.code, 0, show(r));
      const s = await dmctlPipe(tool, ['backup-stream', '-q', '--name', 'dumps/db.bin'], {
        gen: [String(STREAM_SIZE), '--seed', `rt-${t.name}`, '--sha256-file', streamShaFile],
        env: { ...CLEAN_ENV, ...t.env() },
      });
      assert.equal(s.code, 0, s.stderr);
      streamSha = (await fsp.readFile(streamShaFile, 'utf8')).trim();
      assert.match(streamSha, /^[0-9a-f]{64}$/);
    });

    it('snapshots --json lists both snapshots', async () => {
      const r = ok(await run(['snapshots', '--json']));
      const snaps = json<SnapshotJson[]>(r);
      assert.equal(snaps.length, 2, JSON.stringify(snaps));
      for (const s of snaps) {
        assert.match(s.id, /^[0-9a-f]{64}$/);
        assert.equal(s.short_id, s.id.slice(0, 8));
        assert.match(s.tree, /^[0-9a-f]{64}$/);
      }
      treeSnap = snaps.find((s) => s.paths.length === 1 && s.paths[0] === SRC)!;
      streamSnap = snaps.find((s) => s.id !== treeSnap?.id)!;
      assert.ok(treeSnap, `a snapshot of ${SRC}`);
      assert.deepEqual(streamSnap.paths, ['/dumps/db.bin']);
    });

    it('restore --verify gives the source tree back byte for byte', async () => {
      const target = path.join(tmpRoot, `restore-${t.name.split(' ')[0]}`);
      const r = await run(['restore', treeSnap.short_id, '--target', target, '--verify']);
      assert.equal(r.code, 0, show(r));
      assert.match(r.stdout.toString() + r.stderr, new RegExp(`verified ${fileCount} files`));
      const restored = await treeManifest(path.join(target, SRC));
      assert.deepEqual(diffManifests(srcManifest, restored), []);
      const big = restored.entries.find((e) => e.path.toString() === 'big/large.bin');
      assert.equal(big?.size, BIG_SIZE);
      assert.ok(restored.entries.filter((e) => e.type === 'file').length > 300);
      await fsp.rm(target, { recursive: true, force: true });
    });

    it('restore-stream gives the stream back (same SHA-256)', async () => {
      const h = crypto.createHash('sha256');
      let n = 0;
      const r = await dmctl(tool, ['restore-stream', streamSnap.short_id], {
        env: { ...CLEAN_ENV, ...t.env() },
        onStdout: (c) => {
          h.update(c);
          n += c.length;
        },
      });
      assert.equal(r.code, 0, show(r));
      assert.equal(n, STREAM_SIZE);
      assert.equal(h.digest('hex'), streamSha);
    });

    it('forget --keep-last 1 --prune drops the older tree snapshot and the data only it held', async () => {
      // A second tree snapshot without the large file: the first one becomes the older of its group.
      // (backed up under the same path, so both tree snapshots are one group)
      const orig = `${SRC}.orig`;
      await fsp.rename(SRC, orig);
      let second: RunResult;
      try {
        await fsp.cp(orig, SRC, { recursive: true, verbatimSymlinks: true });
        await fsp.rm(path.join(SRC, 'big'), { recursive: true });
        await fsp.unlink(path.join(SRC, 'a', 'b', 'uplink'));
        await fsp.writeFile(path.join(SRC, 'a', 'new-file.txt'), 'added in the second snapshot\n');
        second = await run(['backup', '-q', SRC]);
      } finally {
        await fsp.rm(SRC, { recursive: true, force: true });
        await fsp.rename(orig, SRC);
      }
      assert.equal(second.code, 0, show(second));
      const before = await dataBytes(t);

      const f = await run(['forget', '--keep-last', '1', '--prune']);
      assert.equal(f.code, 0, show(f));
      const snaps = json<SnapshotJson[]>(ok(await run(['snapshots', '--json'])));
      assert.equal(snaps.length, 2);
      assert.ok(!snaps.some((s) => s.id === treeSnap.id), 'the older tree snapshot is gone');
      assert.ok(snaps.some((s) => s.id === streamSnap.id), 'the stream snapshot (its own group) stays');
      const after = await dataBytes(t);
      assert.ok(before - after >= BIG_SIZE - (1 << 20), `prune freed the large file's packs (${before} → ${after} bytes of data)`);
      assert.ok(after >= STREAM_SIZE, 'the stream data stays');
    });

    it('check --read-data finds no errors, and the stream still restores', async () => {
      const c = await run(['check', '--read-data']);
      assert.equal(c.code, 0, show(c));
      assert.match(c.stdout.toString(), /no errors were found/);
      const h = crypto.createHash('sha256');
      const r = await dmctl(tool, ['restore-stream', 'latest', '--path', '/dumps/db.bin'], { env: { ...CLEAN_ENV, ...t.env() }, onStdout: (b) => h.update(b) });
      assert.equal(r.code, 0, show(r));
      assert.equal(h.digest('hex'), streamSha);
    });
  });
}

describe('the backends really are remote', () => {
  it('the S3, Azure and GCS repositories are not on the local disk and the REST one is in rclone\'s folder', async () => {
    const rclone = await fsp.readdir(path.join(rest.dir, 'roundtrip'));
    assert.deepEqual(rclone.sort(), ['config', 'data', 'index', 'keys', 'locks', 'snapshots']);
    for (const t of targets.slice(1, 4)) {
      const be = await openBackend(t.repo(), t.backendOpts());
      try {
        assert.equal((await listAll(be, 'config')).length, 1, t.name);
        assert.ok((await listAll(be, 'snapshots')).length === 2, t.name);
      } finally {
        await be.close();
      }
    }
  });
});
