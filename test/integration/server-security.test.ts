// Security matrix of the repository server: authentication and its growing delay, roles on every endpoint,
// private repositories, path traversal and malformed names, upload verification, size and time limits,
// certificate pinning, credential rotation through a watched folder, SIGHUP and refresh.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { existsSync, promises as fsp, readdirSync, symlinkSync, mkdirSync, writeFileSync, renameSync } from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import { startServer, type ServerHandle } from '../../src/server/start.js';
import { addUser } from '../../src/server/user-admin.js';
import { hashPassword, readUsersFile, writeUsersFile } from '../../src/server/users.js';
import { serverStatus, FingerprintMismatchError, ServerUnreachableError } from '../../src/server/client.js';
import { generateSelfSigned, writeTls } from '../../src/server/tls.js';
import type { ServerSettings } from '../../src/server/settings.js';
import { dmctl, request, sha256hex, startServerProcess, tmpDir, waitFor, writeSecret, type ReqOpts } from '../support/server-helpers.js';

const PW = { full: 'full-pw', app: 'append-pw', ro: 'read-pw', metrics: 'metrics-pw' };

function settings(dir: string, extra: Partial<ServerSettings> = {}): ServerSettings {
  return {
    repo: path.join(dir, 'repo'),
    host: '127.0.0.1',
    port: 0,
    tlsGenerateCert: true,
    insecureHttp: false,
    usersFile: path.join(dir, 'users.json'),
    clientCredentialsRole: 'append',
    privateRepos: false,
    protocol: 'restic-rest',
    authDelayBaseMs: 50,
    authDelayMaxMs: 400,
    ...extra,
  };
}

async function makeUsers(dir: string): Promise<void> {
  const usersFile = path.join(dir, 'users.json');
  await addUser({ usersFile, name: 'root', role: 'full', password: PW.full });
  await addUser({ usersFile, name: 'app', role: 'append', password: PW.app });
  await addUser({ usersFile, name: 'ro', role: 'read', password: PW.ro });
  await addUser({ usersFile, name: 'metrics', role: 'read', password: PW.metrics });
}

async function start(dir: string, extra: Partial<ServerSettings> = {}, rescanMs?: number): Promise<{ h: ServerHandle; base: { port: number; ca: string }; ca: string }> {
  const h = await startServer(settings(dir, extra), { tlsOutDir: path.join(dir, 'tls'), rescanMs });
  const ca = await fsp.readFile(path.join(dir, 'tls', 'cert.pem'), 'utf8');
  return { h, base: { port: h.port, ca }, ca };
}

const rnd = (n: number) => crypto.randomBytes(n);

describe('main server', () => {
  const dir = tmpDir('server-sec');
  let h: ServerHandle;
  let base: { port: number; ca: string };
  const as = (user: keyof typeof PW | 'root', o: ReqOpts) =>
    request(base, { ...o, user: user === 'root' ? 'root' : user, password: user === 'root' ? PW.full : PW[user as keyof typeof PW] });
  const files: Record<string, { name: string; body: Buffer }> = {};

  before(async () => {
    await makeUsers(dir);
    ({ h, base } = await start(dir));
    // A repository written by the full user.
    assert.equal((await as('root', { method: 'POST', path: '/?create=true' })).status, 200);
    assert.equal((await as('root', { method: 'POST', path: '/config', body: rnd(155) })).status, 200);
    for (const t of ['data', 'index', 'snapshots', 'keys', 'locks']) {
      const body = rnd(t === 'data' ? 70_000 : 300);
      const name = sha256hex(body);
      files[t] = { name, body };
      const r = await as('root', { method: 'POST', path: `/${t}/${name}`, body });
      assert.equal(r.status, 200, `${t}: ${r.body}`);
    }
  });
  after(async () => {
    await h.stop();
    await fsp.rm(dir, { recursive: true, force: true });
  });

  test('restic layout on disk; data sharded', () => {
    assert.ok(existsSync(path.join(dir, 'repo', 'data', files.data.name.slice(0, 2), files.data.name)));
    assert.equal(readdirSync(path.join(dir, 'repo', 'data')).length, 256);
  });

  test('no credentials and wrong passwords answer 401 on every endpoint, with a delay that grows', async () => {
    const endpoints: ReqOpts[] = [
      { method: 'POST', path: '/?create=true' },
      { method: 'HEAD', path: '/config' },
      { method: 'GET', path: '/config' },
      { method: 'POST', path: '/config', body: 'x' },
      { method: 'DELETE', path: '/config' },
      { method: 'GET', path: '/data/' },
      { method: 'HEAD', path: `/data/${files.data.name}` },
      { method: 'GET', path: `/data/${files.data.name}` },
      { method: 'POST', path: `/data/${sha256hex('z')}`, body: 'z' },
      { method: 'DELETE', path: `/locks/${files.locks.name}` },
      { method: 'GET', path: '/metrics' },
      { method: 'GET', path: '/_admin/status' },
      { method: 'GET', path: '/../../etc/passwd' },
    ];
    for (const e of endpoints) {
      const r = await request(base, e);
      assert.equal(r.status, 401, `${e.method} ${e.path} without credentials`);
      assert.equal(r.headers['www-authenticate'], undefined);
      const w = await request(base, { ...e, user: 'root', password: 'nope' });
      assert.equal(w.status, 401, `${e.method} ${e.path} with a wrong password`);
      const u = await request(base, { ...e, user: 'ghost', password: PW.full });
      assert.equal(u.status, 401, `${e.method} ${e.path} for an unknown user`);
    }
    // The delay per address doubles up to the cap (400 ms here): the last ones wait the cap.
    const last = await request(base, { path: '/config', user: 'root', password: 'bad' });
    assert.ok(last.ms >= 390, `delay after many failures: ${last.ms} ms`);
    // nothing was written or deleted
    assert.ok(existsSync(path.join(dir, 'repo', 'locks', files.locks.name)));
    assert.ok(!existsSync(path.join(dir, 'repo', 'data', sha256hex('z').slice(0, 2), sha256hex('z'))));
  });

  test('delay grows with repeated failures (fresh server)', async () => {
    const d2 = tmpDir('server-delay');
    await makeUsers(d2);
    const s2 = await start(d2, { authDelayBaseMs: 200, authDelayMaxMs: 4000 });
    try {
      const times: number[] = [];
      for (let i = 0; i < 4; i++) times.push((await request(s2.base, { path: '/config', user: 'root', password: 'wrong' })).ms);
      assert.ok(times[0] >= 195 && times[0] < 1200, `first failure ${times[0]} ms`);
      assert.ok(times[3] >= 1580, `fourth failure ${times[3]} ms (want ~1600)`);
      // Each attempt also pays the password check (scrypt), which a loaded machine slows down by
      // up to a few hundred ms, the first one most (seen: 438, 399, 509, 921 ms for delays of 100,
      // 200, 400 and 800). The delay itself goes 400 → 1600 ms from the second attempt to the
      // fourth: the difference stays far above 900 ms whatever scrypt costs.
      assert.ok(times[3] - times[1] >= 900, `delays ${times.join(', ')} ms did not grow`);
      assert.ok(times[2] < times[3], `delays ${times.join(', ')} ms did not grow`);
      // a correct login is not delayed by scrypt on every request (cache)
      const ok1 = await request(s2.base, { method: 'HEAD', path: '/config', user: 'root', password: PW.full });
      const t0 = Date.now();
      for (let i = 0; i < 10; i++) await request(s2.base, { method: 'HEAD', path: '/config', user: 'root', password: PW.full });
      assert.equal(ok1.status, 404);
      assert.ok(Date.now() - t0 < 2000);
    } finally {
      await s2.h.stop();
    }
  });

  test('append user: cannot delete or overwrite data, index, snapshots, keys, config; can add and delete its locks', async () => {
    for (const t of ['data', 'index', 'snapshots', 'keys', 'locks']) {
      const f = files[t];
      const ow = await as('app', { method: 'POST', path: `/${t}/${f.name}`, body: f.body });
      assert.equal(ow.status, 403, `overwrite ${t}`);
      if (t !== 'locks') assert.equal((await as('app', { method: 'DELETE', path: `/${t}/${f.name}` })).status, 403, `delete ${t}`);
    }
    assert.equal((await as('app', { method: 'DELETE', path: '/config' })).status, 403);
    assert.equal((await as('app', { method: 'POST', path: '/config', body: rnd(155) })).status, 403);
    for (const t of ['data', 'index', 'snapshots', 'keys']) assert.ok(existsSync(path.join(dir, 'repo', t === 'data' ? `data/${files.data.name.slice(0, 2)}` : t, files[t].name)), `${t} still there`);
    // reads work
    const g = await as('app', { path: `/data/${files.data.name}` });
    assert.equal(g.status, 200);
    assert.deepEqual(g.body, files.data.body);
    // new files and locks
    const lock = rnd(200);
    assert.equal((await as('app', { method: 'POST', path: `/locks/${sha256hex(lock)}`, body: lock })).status, 200);
    assert.equal((await as('app', { method: 'DELETE', path: `/locks/${sha256hex(lock)}` })).status, 200);
    assert.equal((await as('app', { method: 'DELETE', path: `/locks/${files.locks.name}` })).status, 200);
    const pack = rnd(1000);
    assert.equal((await as('app', { method: 'POST', path: `/data/${sha256hex(pack)}`, body: pack })).status, 200);
    // the metrics endpoint is not for it
    assert.equal((await as('app', { path: '/metrics' })).status, 403);
    assert.equal((await as('app', { path: '/_admin/status' })).status, 403);
  });

  test('read user: list and load only', async () => {
    assert.equal((await as('ro', { path: '/snapshots/' })).status, 200);
    const body = rnd(100);
    assert.equal((await as('ro', { method: 'POST', path: `/snapshots/${sha256hex(body)}`, body })).status, 403);
    assert.equal((await as('ro', { method: 'DELETE', path: `/snapshots/${files.snapshots.name}` })).status, 403);
    assert.equal((await as('ro', { method: 'POST', path: '/?create=true' })).status, 403);
  });

  test('full user: overwrite still refused, delete works, missing delete is 200', async () => {
    assert.equal((await as('root', { method: 'POST', path: `/index/${files.index.name}`, body: files.index.body })).status, 403);
    assert.equal((await as('root', { method: 'POST', path: '/config', body: rnd(155) })).status, 403);
    assert.equal((await as('root', { method: 'DELETE', path: `/index/${files.index.name}` })).status, 200);
    assert.equal((await as('root', { method: 'HEAD', path: `/index/${files.index.name}` })).status, 404);
    assert.equal((await as('root', { method: 'DELETE', path: `/index/${files.index.name}` })).status, 200);
  });

  test('protocol details: listings v1/v2, ranges, 405 with Allow, 416', async () => {
    const v1 = await as('root', { path: '/data/' });
    assert.equal(v1.headers['content-type'], 'application/vnd.x.restic.rest.v1');
    assert.ok((JSON.parse(v1.body.toString()) as string[]).includes(files.data.name));
    const v2 = await as('root', { path: '/data/', headers: { Accept: 'application/vnd.x.restic.rest.v2' } });
    assert.equal(v2.headers['content-type'], 'application/vnd.x.restic.rest.v2');
    assert.ok((JSON.parse(v2.body.toString()) as { name: string; size: number }[]).some((f) => f.name === files.data.name && f.size === 70_000));
    const head = await as('root', { method: 'HEAD', path: `/data/${files.data.name}` });
    assert.equal(head.headers['content-length'], '70000');
    const part = await as('root', { path: `/data/${files.data.name}`, headers: { Range: 'bytes=100-199' } });
    assert.equal(part.status, 206);
    assert.equal(part.headers['content-range'], 'bytes 100-199/70000');
    assert.deepEqual(part.body, files.data.body.subarray(100, 200));
    const tail = await as('root', { path: `/data/${files.data.name}`, headers: { Range: 'bytes=69990-' } });
    assert.deepEqual(tail.body, files.data.body.subarray(69990));
    const bad = await as('root', { path: `/data/${files.data.name}`, headers: { Range: 'bytes=80000-' } });
    assert.equal(bad.status, 416);
    const m = await as('root', { method: 'PUT', path: `/data/${files.data.name}`, body: 'x' });
    assert.equal(m.status, 405);
    assert.match(String(m.headers.allow), /GET/);
    assert.equal((await as('root', { method: 'DELETE', path: '/data/' })).status, 405);
    assert.equal((await as('root', { method: 'POST', path: '/' })).status, 400, 'create needs ?create=true');
  });

  test('path traversal and malformed names are refused and touch nothing outside the repository', async () => {
    const outside = path.join(dir, 'outside');
    const hex = sha256hex('evil');
    const bad = [
      '/../config', '/data/../config', `/data/../../${hex}`, '/%2e%2e/config', '/%2E%2E/%2E%2E/config', `/data/%2e%2e%2f${hex}`,
      `/data%2f..%2fconfig`, `/a%2fb/config`, '//etc/passwd', `//data/${hex}`, `/data//${hex}`, '/./config', `/a/./data/${hex}`,
      `/data/${hex.toUpperCase()}`, `/data/${hex.slice(1)}`, `/data/${hex}0`, `/data/${hex}/`, `/data/${hex}/..`, '/data/../../outside/config',
      `/keys/..%5c..%5cconfig`, `/..%00/config`, '/a/b/c/config', `/data/${'g'.repeat(64)}`,
    ];
    for (const p of bad) {
      for (const method of ['GET', 'POST', 'DELETE']) {
        const r = await as('root', { method, path: p, ...(method === 'POST' ? { body: 'evil' } : {}) });
        assert.ok(r.status === 400 || r.status === 404, `${method} ${p} answered ${r.status}`);
      }
    }
    assert.ok(!existsSync(outside));
    assert.ok(existsSync(path.join(dir, 'repo', 'config')), 'config survived');
  });

  test('an upload whose SHA-256 does not match its name is refused and not stored', async () => {
    const body = rnd(5000);
    const wrong = sha256hex(rnd(10));
    const r = await as('root', { method: 'POST', path: `/data/${wrong}`, body });
    assert.equal(r.status, 400);
    assert.equal((await as('root', { method: 'HEAD', path: `/data/${wrong}` })).status, 404);
    assert.deepEqual(readdirSync(path.join(dir, 'repo', 'data', wrong.slice(0, 2))), []);
  });

  test('metrics: full user and the user named metrics; counters by type and status', async () => {
    const r = await as('metrics', { path: '/metrics' });
    assert.equal(r.status, 200);
    const text = r.body.toString();
    assert.match(text, /dmctl_server_requests_total\{type="data",method="POST",status="200"\} \d+/);
    assert.match(text, /dmctl_server_received_bytes_total\{type="data"\} \d+/);
    assert.match(text, /dmctl_server_auth_failures_total [1-9]\d*/);
    assert.match(text, /dmctl_server_active_connections \d+/);
    assert.equal((await as('root', { path: '/metrics' })).status, 200);
    assert.equal((await request(base, { path: '/healthz' })).status, 200);
    assert.equal((await request(base, { path: '/readyz' })).status, 200);
  });
});

test('a password check slower than the idle timeout does not cut the client off', async () => {
  const dir = tmpDir('server-slow-auth');
  await makeUsers(dir);
  // root's hash made expensive (N = 2^17, ~0.3-1 s here), the idle timeout far shorter
  const usersFile = path.join(dir, 'users.json');
  const users = await readUsersFile(usersFile);
  const root = users.find((u) => u.name === 'root')!;
  root.hash = await hashPassword(PW.full, { N: 1 << 17, r: 8, p: 1 });
  await writeUsersFile(usersFile, users);
  const { h, base } = await start(dir, { idleTimeoutMs: 100 });
  try {
    const started = Date.now();
    const r = await request(base, { method: 'POST', path: '/?create=true', user: 'root', password: PW.full });
    assert.ok(Date.now() - started > 100, 'the check took longer than the idle timeout');
    assert.equal(r.status, 200);
  } finally {
    await h.stop();
    await fsp.rm(dir, { recursive: true, force: true });
  }
});

describe('limits', () => {
  const dir = tmpDir('server-limits');
  let h: ServerHandle;
  let ca: string;
  let base: { port: number; ca: string };
  before(async () => {
    await makeUsers(dir);
    ({ h, base, ca } = await start(dir, { maxBodyBytes: 1024 * 1024, headersTimeoutMs: 1000, idleTimeoutMs: 1500, requestTimeoutMs: 4000 }));
    await request(base, { method: 'POST', path: '/?create=true', user: 'root', password: PW.full });
  });
  after(async () => {
    await h.stop();
    await fsp.rm(dir, { recursive: true, force: true });
  });

  test('a body over the limit is refused with 413 before it is read; no length is 411', async () => {
    const big = rnd(1024 * 1024 + 10);
    const r = await request(base, { method: 'POST', path: `/data/${sha256hex(big)}`, body: big, user: 'root', password: PW.full });
    assert.equal(r.status, 413);
    const c = await request(base, { method: 'POST', path: `/data/${sha256hex('abc')}`, body: 'abc', chunked: true, user: 'root', password: PW.full });
    assert.equal(c.status, 411);
    const ok = rnd(1024 * 1024);
    assert.equal((await request(base, { method: 'POST', path: `/data/${sha256hex(ok)}`, body: ok, user: 'root', password: PW.full })).status, 200);
  });

  async function rawSlow(write: (s: tls.TLSSocket) => void): Promise<{ ms: number; data: string }> {
    const s = tls.connect({ host: '127.0.0.1', port: base.port, ca, servername: 'localhost' });
    await new Promise<void>((r, j) => (s.once('secureConnect', () => r()), s.once('error', j)));
    const t0 = Date.now();
    let data = '';
    s.on('data', (c: Buffer) => (data += c.toString()));
    s.on('error', () => {});
    write(s);
    await new Promise<void>((r) => s.once('close', () => r()));
    return { ms: Date.now() - t0, data };
  }

  test('a client that sends its headers slowly is cut off', async () => {
    const auth = Buffer.from(`root:${PW.full}`).toString('base64');
    const r = await rawSlow((s) => s.write(`GET /config HTTP/1.1\r\nHost: x\r\nAuthorization: Basic ${auth}\r\n`));
    assert.ok(r.ms < 4000, `closed after ${r.ms} ms`);
    assert.ok(!r.data.includes('200 OK'));
  });

  test('a client that stalls in the middle of a body is cut off and nothing is stored', async () => {
    const body = rnd(100_000);
    const name = sha256hex(body);
    const auth = Buffer.from(`root:${PW.full}`).toString('base64');
    const r = await rawSlow((s) => {
      s.write(`POST /data/${name} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic ${auth}\r\nContent-Length: ${body.length}\r\n\r\n`);
      s.write(body.subarray(0, 1000));
    });
    assert.ok(r.ms < 6000, `closed after ${r.ms} ms`);
    assert.equal((await request(base, { method: 'HEAD', path: `/data/${name}`, user: 'root', password: PW.full })).status, 404);
    assert.equal(h.server.budget.inUse, 0, 'memory budget released');
  });
});

describe('private repositories', () => {
  const dir = tmpDir('server-private');
  let h: ServerHandle;
  let base: { port: number; ca: string };
  before(async () => {
    await makeUsers(dir);
    await addUser({ usersFile: path.join(dir, 'users.json'), name: 'other', role: 'full', password: 'other-pw' });
    ({ h, base } = await start(dir, { privateRepos: true }));
  });
  after(async () => {
    await h.stop();
    await fsp.rm(dir, { recursive: true, force: true });
  });

  test('each user reaches only /USER/ and below', async () => {
    const root = { user: 'root', password: PW.full };
    const other = { user: 'other', password: 'other-pw' };
    assert.equal((await request(base, { method: 'POST', path: '/root/?create=true', ...root })).status, 200);
    assert.equal((await request(base, { method: 'POST', path: '/root/config', body: 'cfg-root', ...root })).status, 200);
    assert.equal((await request(base, { method: 'POST', path: '/other/sub/?create=true', ...other })).status, 200);
    const b = rnd(64);
    assert.equal((await request(base, { method: 'POST', path: `/other/sub/keys/${sha256hex(b)}`, body: b, ...other })).status, 200);
    assert.ok(existsSync(path.join(dir, 'repo', 'root', 'config')));
    assert.ok(existsSync(path.join(dir, 'repo', 'other', 'sub', 'keys', sha256hex(b))));
    // crossing over
    for (const [p, who] of [['/root/config', other], ['/other/sub/keys/', root], ['/config', root], ['/keys/', other], ['/other/?create=true', root]] as const) {
      for (const method of ['GET', 'POST', 'DELETE']) {
        const r = await request(base, { method, path: p, ...who, ...(method === 'POST' ? { body: 'x' } : {}) });
        assert.equal(r.status, 403, `${who.user} ${method} ${p}`);
      }
    }
    assert.equal((await request(base, { path: '/root/config', ...root })).body.toString(), 'cfg-root');
  });
});

describe('pinning, rotation and reloads', () => {
  const dir = tmpDir('server-rot');
  after(async () => {
    await fsp.rm(dir, { recursive: true, force: true });
  });

  test('status: a pinned client refuses another certificate and sends nothing; a stopped server is reported down', async () => {
    await makeUsers(dir);
    const { h, base } = await start(dir);
    try {
      const url = `https://127.0.0.1:${h.port}/`;
      const good = await serverStatus({ url, fingerprint: h.fingerprint, user: 'root', password: PW.full });
      assert.equal(good.ready, true);
      assert.deepEqual(good.users?.map((u) => u.name).sort(), ['app', 'metrics', 'ro', 'root']);
      const before = h.server.metrics.summary().requests;
      const wrong = 'ab'.repeat(32);
      await assert.rejects(serverStatus({ url, fingerprint: wrong, user: 'root', password: PW.full }), FingerprintMismatchError);
      assert.equal(h.server.metrics.summary().requests, before, 'no request reached the server');
      // the command exits non-zero on mismatch, zero when it matches
      const bad = await dmctl(['server', 'status', '--server', url, '--server-cert-fingerprint', wrong]);
      assert.notEqual(bad.code, 0);
      assert.match(bad.stderr, /fingerprint/);
      const ok = await dmctl(['server', 'status', '--server', url, '--server-cert-fingerprint', h.fingerprint!.toUpperCase().match(/../g)!.join(':')]);
      assert.equal(ok.code, 0, ok.stderr);
      assert.equal(base.port, h.port);
    } finally {
      await h.stop();
    }
    await assert.rejects(serverStatus({ url: `https://127.0.0.1:${h.port}/`, fingerprint: h.fingerprint }), ServerUnreachableError);
    const down = await dmctl(['server', 'status', '--server', `https://127.0.0.1:${h.port}/`, '--server-cert-fingerprint', h.fingerprint!]);
    assert.notEqual(down.code, 0);
  });

  test('client credentials folder (Kubernetes ..data swap): added users work, removed users are refused within seconds', async () => {
    const creds = path.join(dir, 'client_credentials');
    mkdirSync(path.join(creds, '..v1'), { recursive: true });
    writeFileSync(path.join(creds, '..v1', 'client-a'), 'carl@ns1-pod:carl-pw');
    writeFileSync(path.join(creds, '..v1', 'client-b'), 'dora@ns2-pod:dora-pw');
    symlinkSync('..v1', path.join(creds, '..data'));
    symlinkSync('..data/client-a', path.join(creds, 'client-a'));
    symlinkSync('..data/client-b', path.join(creds, 'client-b'));
    const { h, base } = await start(dir, { clientCredentialsDir: creds, usersFile: undefined }, 1000);
    try {
      const carl = () => request(base, { method: 'HEAD', path: '/config', user: 'carl', password: 'carl-pw' });
      assert.equal((await carl()).status, 404, 'carl authenticated (repository has no config yet)');
      assert.equal((await request(base, { method: 'DELETE', path: '/config', user: 'dora', password: 'dora-pw' })).status, 403, 'credentials users are append');
      // Rotate the way the kubelet does: new timestamped folder, atomic rename of a new ..data link.
      mkdirSync(path.join(creds, '..v2'));
      writeFileSync(path.join(creds, '..v2', 'client-b'), 'dora@ns2-pod:dora-new');
      symlinkSync('..v2', path.join(creds, '..data_tmp'));
      renameSync(path.join(creds, '..data_tmp'), path.join(creds, '..data'));
      const t0 = Date.now();
      await waitFor(async () => (await carl()).status === 401, 6000, 200);
      assert.ok(Date.now() - t0 < 6000);
      await waitFor(async () => (await request(base, { method: 'HEAD', path: '/config', user: 'dora', password: 'dora-new' })).status === 404, 6000, 200);
      assert.equal((await request(base, { method: 'HEAD', path: '/config', user: 'dora', password: 'dora-pw' })).status, 401, 'old password refused');
      // plain file removal works too
      await fsp.rm(path.join(creds, 'client-b'));
      await waitFor(async () => (await request(base, { method: 'HEAD', path: '/config', user: 'dora', password: 'dora-new' })).status === 401, 6000, 200);
    } finally {
      await h.stop();
    }
  });

  test('refresh reloads users and swaps the certificate; the server process reloads on SIGHUP', async () => {
    const d = tmpDir('server-reload');
    try {
      await makeUsers(d);
      const certFile = path.join(d, 'c.pem');
      const keyFile = path.join(d, 'k.pem');
      const t1 = generateSelfSigned();
      await writeTls(t1, certFile, keyFile);
      const srv = await startServerProcess(['--repo', path.join(d, 'repo'), '--tls-cert-file', certFile, '--tls-key-file', keyFile, '--users-file', path.join(d, 'users.json')], d);
      try {
        assert.equal(srv.fingerprint, t1.fingerprint);
        const base = { port: srv.port, ca: t1.cert };
        // an offline edit of the users file is not seen until a reload
        await addUser({ usersFile: path.join(d, 'users.json'), name: 'late', role: 'full', password: 'late-pw' });
        assert.equal((await request(base, { method: 'HEAD', path: '/config', user: 'late', password: 'late-pw' })).status, 401);
        process.kill(srv.proc.pid!, 'SIGHUP');
        await waitFor(async () => (await request(base, { method: 'HEAD', path: '/config', user: 'late', password: 'late-pw' })).status === 404, 5000, 200);
        // new certificate through `server refresh`; the pinned old fingerprint no longer matches
        const t2 = generateSelfSigned();
        await writeTls(t2, certFile, keyFile);
        const pw = await writeSecret(path.join(d, 'root.pw'), PW.full);
        const r = await dmctl(['server', 'refresh', '--server', `https://127.0.0.1:${srv.port}/`, '--server-cert-fingerprint', t1.fingerprint, '--user', 'root', '--password-file', pw, '--json']);
        assert.equal(r.code, 0, r.stderr);
        assert.equal((JSON.parse(r.stdout) as { fingerprint: string }).fingerprint, t2.fingerprint);
        const st = await serverStatus({ url: `https://127.0.0.1:${srv.port}/`, fingerprint: t2.fingerprint });
        assert.equal(st.fingerprint, t2.fingerprint);
        await assert.rejects(serverStatus({ url: `https://127.0.0.1:${srv.port}/`, fingerprint: t1.fingerprint }), FingerprintMismatchError);
      } finally {
        assert.equal(await srv.stop(), 0);
      }
    } finally {
      await fsp.rm(d, { recursive: true, force: true });
    }
  });

  test('PROTOCOLS naming something else is a fatal start error', async () => {
    const r = await dmctl(['server', 'start', '--repo', path.join(dir, 'r2'), '--insecure-http', '--address', '127.0.0.1:0'], { PROTOCOLS: 'kopia-v0-17-0:51515' });
    assert.notEqual(r.code, 0);
    assert.match(r.stdout + r.stderr, /unsupported protocol/);
  });
});
