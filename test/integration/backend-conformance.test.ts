// One Backend conformance suite, run against every backend on a real server: local, S3 on Ceph
// radosgw, Azure on azurite, GCS on Firebase's emulator, REST on `rclone serve restic`. Then faults
// through a loopback proxy in front of radosgw, and bad settings (one-line errors, no secrets).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promises as fsp } from 'node:fs';
import { Backend, FileType, listAll } from '../../src/storage/backend.js';
import { openBackend, BackendOptions } from '../../src/storage/open.js';
import { parseRepositoryUrl, RepoLocation } from '../../src/storage/url.js';
import { StorageError, UsageError, EXIT_CODES } from '../../src/core/errors.js';
import { startRadosgw, startAzurite, startGcsEmulator, startRcloneRestic, freePort, RadosgwServer, AzuriteServer, GcsEmulator, RestServer, GCS_CLIENT_ENV, startTogether } from '../support/servers.js';
import { startFaultProxy, FaultProxy } from '../support/fault-proxy.js';

Object.assign(process.env, GCS_CLIENT_ENV);

const sha = (b: Uint8Array) => crypto.createHash('sha256').update(b).digest('hex');
function blob(size: number): { name: string; data: Buffer } {
  const data = crypto.randomBytes(size);
  return { name: sha(data), data };
}
async function rejectsKind(p: Promise<unknown>, kind: string): Promise<StorageError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof StorageError, `expected a StorageError, got ${(err as Error)?.name}: ${(err as Error)?.message}`);
    assert.equal(err.kind, kind, `kind of: ${err.message}`);
    assert.equal(err.exitCode, EXIT_CODES.STORAGE);
    assert.ok(!err.message.includes('\n'), 'one-line message');
    return err;
  }
  assert.fail(`expected a ${kind} error`);
}
async function runLimited<T>(items: T[], n: number, fn: (x: T) => Promise<void>): Promise<void> {
  let i = 0;
  await Promise.all(Array.from({ length: n }, async () => {
    while (i < items.length) await fn(items[i++]);
  }));
}

const tmpRoot = await fsp.mkdtemp(path.join(os.tmpdir(), 'dmctl-conf-'));
let rgw: RadosgwServer;
let azurite: AzuriteServer;
let gcs: GcsEmulator;
let rest: RestServer;
let gcsRecorder: FaultProxy;
const SECRET_MARK = 'DMTESTSECRETKEY';

before(async () => {
  [rgw, azurite, gcs, rest] = await startTogether([
    startRadosgw(),
    startAzurite(),
    startGcsEmulator(),
    startRcloneRestic(path.join(tmpRoot, 'rest')),
  ]);
  gcsRecorder = await startFaultProxy(gcs.endpoint, {});
}, { timeout: 400_000 });

after(async () => {
  await Promise.allSettled([rgw?.stop(), azurite?.stop(), gcs?.stop(), rest?.stop(), gcsRecorder?.stop()]);
  await fsp.rm(tmpRoot, { recursive: true, force: true });
});

interface Target {
  name: string;
  open(): Promise<Backend>;
  /** Is an existing name refused? (the GCS emulator ignores ifGenerationMatch) */
  refusesOverwrite: boolean;
  /** Is the refusal atomic among concurrent writers? (rclone serve restic overwrites; the client checks first) */
  atomicCreate: boolean;
}

let seq = 0;
const targets: Target[] = [
  { name: 'local', refusesOverwrite: true, atomicCreate: true, open: () => openBackend(path.join(tmpRoot, `local-${++seq}`)) },
  {
    name: 's3 (radosgw)',
    refusesOverwrite: true,
    atomicCreate: true,
    open: () => openBackend(`s3:${rgw.endpoint}/conf-${++seq}/repo/a`, { profile: { s3: { accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey } }, connections: 8 }),
  },
  {
    name: 'azure (azurite)',
    refusesOverwrite: true,
    atomicCreate: true,
    open: () => openBackend(`azure:conf-${++seq}:/repo`, { profile: { azure: { connectionString: azurite.connectionString } }, connections: 8 }),
  },
  {
    name: 'gcs (emulator)',
    refusesOverwrite: false,
    atomicCreate: false,
    open: () => {
      const loc = parseRepositoryUrl(`gs:conf-${++seq}:/repo`) as Extract<RepoLocation, { scheme: 'gs' }>;
      return openBackend({ ...loc, endpoint: gcsRecorder.url }, { connections: 8 });
    },
  },
  { name: 'rest (rclone serve restic)', refusesOverwrite: true, atomicCreate: false, open: () => openBackend(`rest:${rest.url}conf-${++seq}/`, { connections: 8 }) },
];

for (const t of targets) {
  describe(`Backend conformance: ${t.name}`, () => {
    let be: Backend;
    before(async () => {
      be = await t.open();
      await be.create();
      await be.create(); // idempotent
    });
    after(async () => be?.close());

    it('saves, stats and loads whole files and byte ranges', async () => {
      const { name, data } = blob(100_000);
      await be.save('data', name, data);
      assert.deepEqual(await be.stat('data', name), { name, size: data.length });
      assert.ok((await be.load('data', name)).equals(data));
      assert.ok((await be.load('data', name, 1000, 5000)).equals(data.subarray(1000, 6000)));
      assert.ok((await be.load('data', name, 99_990)).equals(data.subarray(99_990)));
      assert.ok((await be.load('data', name, 0, 1)).equals(data.subarray(0, 1)));
      // a range that reaches past the end is a clear error, never a silent short read
      await rejectsKind(be.load('data', name, 99_000, 5000), 'other');
    });

    if (t.name.startsWith('s3')) {
      it('a pack is signed with its name as the payload hash: bytes that do not match it are refused and not stored', async () => {
        const { name, data } = blob(50_000);
        await be.save('data', name, data);
        assert.ok((await be.load('data', name)).equals(data));
        const wrong = sha(Buffer.from('some other bytes'));
        await assert.rejects(be.save('data', wrong, data), (err: unknown) => err instanceof StorageError && /HTTP 400/.test(err.message));
        await rejectsKind(be.stat('data', wrong), 'not-found');
      });
    }

    it('stores config under its fixed name', async () => {
      const data = crypto.randomBytes(300);
      await be.save('config', 'config', data);
      assert.equal((await be.stat('config', 'config')).size, 300);
      assert.ok((await be.load('config', 'config')).equals(data));
      assert.deepEqual(await listAll(be, 'config'), [{ name: 'config', size: 300 }]);
      if (t.refusesOverwrite) await rejectsKind(be.save('config', 'config', crypto.randomBytes(10)), 'already-exists');
    });

    it('answers not-found for missing files and ignores removing them', async () => {
      const missing = sha(Buffer.from(`missing-${t.name}`));
      await rejectsKind(be.load('index', missing), 'not-found');
      await rejectsKind(be.load('data', missing, 10, 10), 'not-found');
      await rejectsKind(be.stat('snapshots', missing), 'not-found');
      await be.remove('locks', missing);
    });

    it('lists more than 1,000 files with sizes, across data shards, per type', async () => {
      const files = Array.from({ length: 1030 }, (_, i) => blob(40 + (i % 50)));
      await runLimited(files, 16, (f) => be.save('data', f.name, f.data));
      const keys = Array.from({ length: 3 }, () => blob(64));
      for (const k of keys) await be.save('keys', k.name, k.data);
      const listed = await listAll(be, 'data');
      const want = new Map(files.map((f) => [f.name, f.data.length]));
      const got = new Map(listed.filter((f) => want.has(f.name)).map((f) => [f.name, f.size]));
      assert.equal(got.size, files.length);
      assert.deepEqual(got, want);
      const keyList = await listAll(be, 'keys');
      assert.deepEqual(keyList.map((k) => k.name).sort(), keys.map((k) => k.name).sort());
      assert.deepEqual(await listAll(be, 'snapshots'), []);
    });

    it('removes files', async () => {
      const { name, data } = blob(500);
      await be.save('snapshots', name, data);
      assert.equal((await listAll(be, 'snapshots')).length, 1);
      await be.remove('snapshots', name);
      await rejectsKind(be.stat('snapshots', name), 'not-found');
      assert.deepEqual(await listAll(be, 'snapshots'), []);
    });

    it('stores a large file (multipart / staged blocks where the provider uses them)', async () => {
      const { name, data } = blob(70 * 1024 * 1024 + 123);
      await be.save('data', name, data);
      assert.equal((await be.stat('data', name)).size, data.length);
      const back = await be.load('data', name);
      assert.equal(sha(back), name);
      assert.ok((await be.load('data', name, 64 * 1024 * 1024 - 10, 100)).equals(data.subarray(64 * 1024 * 1024 - 10, 64 * 1024 * 1024 + 90)));
      await be.remove('data', name);
    });

    if (t.refusesOverwrite) {
      it('refuses to overwrite an existing file and keeps its content', async () => {
        const { name, data } = blob(2000);
        await be.save('index', name, data);
        await rejectsKind(be.save('index', name, crypto.randomBytes(2000)), 'already-exists');
        assert.ok((await be.load('index', name)).equals(data));
      });
    } else {
      it('asks the server for no-overwrite on every upload (ifGenerationMatch=0; the emulator ignores it)', async () => {
        const before = gcsRecorder.recorded.length;
        const { name, data } = blob(2000);
        await be.save('index', name, data);
        const uploads = gcsRecorder.recorded.slice(before).filter((r) => r.method === 'POST' && r.url.includes('/upload/'));
        assert.equal(uploads.length, 1);
        assert.match(uploads[0].url, /[?&]ifGenerationMatch=0(&|$)/);
      });
    }

    it(t.atomicCreate
      ? 'lets exactly one of several concurrent writers of one name win, content intact'
      : 'keeps content intact with concurrent writers of one name (the server does not arbitrate)', async () => {
      for (let round = 0; round < 3; round++) {
        const name = sha(crypto.randomBytes(32));
        // Without server-side arbitration only same-content writers are safe (restic names are
        // content hashes, so that is the case that happens); with it, different bodies must not mix.
        const one = crypto.randomBytes(256 * 1024);
        const bodies = Array.from({ length: 6 }, () => (t.atomicCreate ? crypto.randomBytes(256 * 1024) : one));
        const results = await Promise.allSettled(bodies.map((b) => be.save('locks', name, b)));
        const won = results.map((r, i) => (r.status === 'fulfilled' ? i : -1)).filter((i) => i >= 0);
        for (const r of results) if (r.status === 'rejected') assert.equal((r.reason as StorageError).kind, 'already-exists', (r.reason as Error).message);
        const stored = await be.load('locks', name);
        if (t.atomicCreate) {
          assert.equal(won.length, 1, `exactly one writer wins (round ${round})`);
          assert.ok(stored.equals(bodies[won[0]]));
        } else {
          assert.ok(won.length >= 1);
          assert.ok(won.some((i) => stored.equals(bodies[i])), 'the stored file is one whole body of a writer that succeeded');
        }
      }
    });
  });
}

describe('GCS request layer (a stand-in server for what the emulator cannot do)', () => {
  it('maps the 412 of a generation precondition onto already-exists and a 404 onto not-found', async () => {
    const seen: string[] = [];
    const srv = http.createServer((req, res) => {
      seen.push(`${req.method} ${req.url}`);
      req.resume();
      req.on('end', () => {
        const code = req.method === 'POST' ? 412 : 404;
        const body = JSON.stringify({ error: { code, message: code === 412 ? 'At least one of the pre-conditions you specified did not hold.' : 'No such object: b/x', errors: [{ reason: code === 412 ? 'conditionNotMet' : 'notFound' }] } });
        res.writeHead(code, { 'content-type': 'application/json' });
        res.end(body);
      });
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    try {
      const port = (srv.address() as net.AddressInfo).port;
      const loc = parseRepositoryUrl('gs:bkt:/p') as Extract<RepoLocation, { scheme: 'gs' }>;
      const be = await openBackend({ ...loc, endpoint: `http://127.0.0.1:${port}` }, { retry: { maxAttempts: 1 } });
      const { name, data } = blob(10);
      await rejectsKind(be.save('keys', name, data), 'already-exists');
      await rejectsKind(be.stat('keys', name), 'not-found');
      assert.ok(seen.some((s) => s.startsWith('POST ') && s.includes('ifGenerationMatch=0')));
    } finally {
      srv.close();
    }
  });
});

describe('faults: radosgw behind a proxy that delays, resets and answers 500/503', () => {
  let proxy: FaultProxy;
  const s3Opts = (): BackendOptions => ({
    profile: { s3: { accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey } },
    connections: 6,
    retry: { baseDelayMs: 10, maxDelayMs: 200, maxAttempts: 10, requestTimeoutMs: 2000 },
  });
  before(async () => {
    proxy = await startFaultProxy(rgw.endpoint, {}, 42);
  });
  after(async () => proxy?.stop());

  it('saves and loads identical bytes through retries', async () => {
    const setup = await openBackend(`s3:${rgw.endpoint}/faults/r`, s3Opts());
    await setup.create();
    proxy.plan = { reset: 0.08, resetMidBody: 0.08, error500: 0.08, error503: 0.1, delay: 0.1, delayMs: 200, stall: 0.03 };
    const be = await openBackend(`s3:${proxy.url}/faults/r`, s3Opts());
    const files = Array.from({ length: 60 }, (_, i) => blob(1000 + i * 3000));
    await runLimited(files, 6, (f) => be.save('data', f.name, f.data));
    for (const f of files) {
      const back = await be.load('data', f.name);
      assert.equal(sha(back), f.name);
      const part = await be.load('data', f.name, 100, 500);
      assert.ok(part.equals(f.data.subarray(100, 600)));
    }
    const listed = await listAll(be, 'data');
    assert.equal(listed.length, files.length);
    const faults = proxy.stats.resets + proxy.stats.errors + proxy.stats.stalls;
    assert.ok(faults >= 10, `the proxy injected faults (${JSON.stringify(proxy.stats)})`);
    assert.ok((be as any).policy.retries >= faults * 0.5, 'the wrapper retried');
    proxy.plan = {};
    await setup.close();
    await be.close();
  });

  it('fails with one clear line naming backend and operation when the budget is spent', async () => {
    proxy.plan = { error503: 1 };
    const be = await openBackend(`s3:${proxy.url}/faults/r`, { ...s3Opts(), retry: { baseDelayMs: 5, maxDelayMs: 20, maxAttempts: 4 } });
    const { name, data } = blob(100);
    const err = await rejectsKind(be.save('data', name, data), 'unreachable');
    assert.match(err.message, new RegExp(`^s3:${proxy.url.replace(/[.]/g, '\\.')}/faults/r: saving data/${name.slice(0, 16)}… failed after 4 attempts: .*(503|SlowDown)`));
    assert.ok(!err.message.includes(SECRET_MARK));
    proxy.plan = {};
    await be.close();
  });
});

describe('bad settings: one-line errors with kinds and exit codes, secrets never echoed', () => {
  const quick = { retry: { baseDelayMs: 5, maxDelayMs: 20, maxAttempts: 3, requestTimeoutMs: 5000 } };

  it('unknown URL scheme is a usage error', () => {
    assert.throws(() => parseRepositoryUrl('ftp://host/x'), (e: unknown) => e instanceof UsageError && e.exitCode === EXIT_CODES.USAGE && /unknown repository URL scheme "ftp:"/.test(e.message));
  });

  it('missing bucket / container', async () => {
    const s3 = await openBackend(`s3:${rgw.endpoint}/no-such-bucket-x/p`, { ...quick, profile: { s3: { accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey } } });
    await rejectsKind(s3.load('config', 'config'), 'bucket-missing');
    await rejectsKind(s3.stat('config', 'config'), 'bucket-missing');
    const az = await openBackend('azure:no-such-container:/p', { ...quick, profile: { azure: { connectionString: azurite.connectionString } } });
    await rejectsKind(az.load('config', 'config'), 'bucket-missing');
    await rejectsKind(az.stat('config', 'config'), 'bucket-missing');
  });

  it('wrong keys', async () => {
    const s3 = await openBackend(`s3:${rgw.endpoint}/conf-1/p`, { ...quick, profile: { s3: { accessKeyId: rgw.accessKeyId, secretAccessKey: 'WRONGSECRET-do-not-echo' } } });
    const e1 = await rejectsKind(s3.load('config', 'config'), 'access-denied');
    assert.ok(!e1.message.includes('WRONGSECRET') && !e1.message.includes(SECRET_MARK), e1.message);
    const badKey = Buffer.from('not-the-key-do-not-echo').toString('base64');
    const az = await openBackend('azure:conf-x:/p', { ...quick, profile: { azure: { connectionString: `DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=${badKey};BlobEndpoint=${azurite.endpoint};` } } });
    const e2 = await rejectsKind(az.stat('config', 'config'), 'access-denied');
    assert.ok(!e2.message.includes(badKey));
    const pw = 'pw-do-not-echo';
    const htdir = path.join(tmpRoot, 'auth');
    await fsp.mkdir(htdir, { recursive: true });
    // {SHA} htpasswd entry for alice:right
    await fsp.writeFile(path.join(htdir, 'htpasswd'), `alice:{SHA}${crypto.createHash('sha1').update('right').digest('base64')}\n`);
    const authRest = await startRcloneRestic(path.join(htdir, 'data'), ['--htpasswd', path.join(htdir, 'htpasswd')]);
    try {
      const r = await openBackend(`rest:http://alice:${pw}@127.0.0.1:${authRest.port}/`, quick);
      const e3 = await rejectsKind(r.stat('config', 'config'), 'access-denied');
      assert.ok(!e3.message.includes(pw), e3.message);
      assert.ok(!r.location.includes(pw));
      const ok = await openBackend(`rest:http://alice:right@127.0.0.1:${authRest.port}/`, quick);
      await ok.create();
      await rejectsKind(ok.stat('config', 'config'), 'not-found');
    } finally {
      await authRest.stop();
    }
  });

  it('unreachable endpoint', async () => {
    const port = await freePort();
    const started = Date.now();
    for (const url of [`s3:http://127.0.0.1:${port}/bkt/p`, `rest:http://u:secretpw@127.0.0.1:${port}/`]) {
      const be = await openBackend(url, { ...quick, profile: { s3: { accessKeyId: 'a', secretAccessKey: 'secretpw' } } });
      const e = await rejectsKind(be.stat('config', 'config'), 'unreachable');
      assert.match(e.message, /connection refused/);
      assert.match(e.message, /stat config failed after 3 attempts/);
      assert.ok(!e.message.includes('secretpw'));
    }
    assert.ok(Date.now() - started < 10_000);
  });
});

describe('REST client: TLS (custom CA, certificate pinning) and the v1 listing fallback', () => {
  let tlsRest: RestServer;
  let certPem: string;
  before(async () => {
    const selfsigned = (await import('selfsigned')).default;
    const pems = selfsigned.generate([{ name: 'commonName', value: '127.0.0.1' }], {
      days: 2, keySize: 2048, algorithm: 'sha256',
      extensions: [{ name: 'subjectAltName', altNames: [{ type: 7, ip: '127.0.0.1' }] }],
    } as any);
    certPem = pems.cert;
    const dir = path.join(tmpRoot, 'tls');
    await fsp.mkdir(dir, { recursive: true });
    await fsp.writeFile(path.join(dir, 'cert.pem'), pems.cert);
    await fsp.writeFile(path.join(dir, 'key.pem'), pems.private);
    tlsRest = await startRcloneRestic(path.join(dir, 'data'), ['--cert', path.join(dir, 'cert.pem'), '--key', path.join(dir, 'key.pem')]);
  });
  after(async () => tlsRest?.stop());
  const quick = { retry: { baseDelayMs: 5, maxDelayMs: 20, maxAttempts: 2 } };

  it('refuses an unknown CA, accepts --cacert, pins by SHA-256 fingerprint and refuses a mismatch', async () => {
    const url = `rest:https://127.0.0.1:${tlsRest.port}/pin/`;
    const plain = await openBackend(url, quick);
    const e = await rejectsKind(plain.stat('config', 'config'), 'unreachable');
    assert.match(e.message, /TLS certificate not accepted/);
    assert.match(e.hint ?? '', /--cacert/);

    const withCa = await openBackend(url, { ...quick, cacert: certPem });
    await withCa.create();
    const { name, data } = blob(1000);
    await withCa.save('keys', name, data);

    const fp = new crypto.X509Certificate(certPem).fingerprint256; // AB:CD:... form
    const pinned = await openBackend(url, { ...quick, serverCertFingerprint: fp.toLowerCase() });
    assert.ok((await pinned.load('keys', name)).equals(data));
    const pinnedHex = await openBackend(url, { ...quick, serverCertFingerprint: fp.replace(/:/g, '') });
    assert.equal((await pinnedHex.stat('keys', name)).size, 1000);

    const wrong = await openBackend(url, { ...quick, serverCertFingerprint: 'ab'.repeat(32) });
    const e2 = await rejectsKind(wrong.load('keys', name), 'access-denied');
    assert.match(e2.message, /does not match --server-cert-fingerprint/);
    await assert.rejects(openBackend(url, { serverCertFingerprint: 'xyz' }), (err: unknown) => err instanceof UsageError);
  });

  it('falls back to HEAD per name when the server lists in protocol v1, and always sends Range', async () => {
    const files = new Map([['1'.repeat(64), 5], ['2'.repeat(64), 7]]);
    const seen: { method: string; url: string; range?: string }[] = [];
    const srv = http.createServer((req, res) => {
      seen.push({ method: req.method!, url: req.url!, range: req.headers.range });
      const m = /^\/repo\/index\/([0-9a-f]*)$/.exec(req.url!);
      if (req.method === 'GET' && m && !m[1]) {
        res.writeHead(200, { 'content-type': 'application/vnd.x.restic.rest.v1' });
        res.end(JSON.stringify([...files.keys(), 'not-an-id']));
      } else if (req.method === 'HEAD' && m && files.has(m[1])) {
        res.writeHead(200, { 'content-length': files.get(m[1]) });
        res.end();
      } else if (req.method === 'GET' && m && files.has(m[1])) {
        const body = Buffer.alloc(files.get(m[1])!, 7);
        res.writeHead(200, { 'content-length': body.length }); // ignores Range, like some servers
        res.end(body);
      } else {
        res.writeHead(404);
        res.end();
      }
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    try {
      const be = await openBackend(`rest:http://127.0.0.1:${(srv.address() as net.AddressInfo).port}/repo`, quick);
      const listed = await listAll(be, 'index');
      assert.deepEqual(listed.sort((a, b) => a.name.localeCompare(b.name)), [...files].map(([name, size]) => ({ name, size })));
      assert.equal(seen.filter((s) => s.method === 'HEAD').length, 2);
      const part = await be.load('index', '2'.repeat(64), 2, 3);
      assert.ok(part.equals(Buffer.alloc(3, 7)));
      await be.load('index', '1'.repeat(64));
      for (const s of seen.filter((x) => x.method === 'GET' && x.url !== '/repo/index/')) assert.match(s.range ?? '', /^bytes=\d+-\d*$/);
    } finally {
      srv.close();
    }
  });
});
