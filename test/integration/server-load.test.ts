// Load on `dmctl server start` over HTTPS: 20 unmodified restic 0.14 clients, each its own `append` user from
// the watched client-credentials folder with its own private repository (--private-repos, as clients in
// different namespaces would use it), back up their own generated data in several rounds at the same time.
// (One shared repository works too, but restic 0.14 retries loading a lock file another client has just
// removed ten times with back-off, which makes its run time a matter of luck; the server answers 404 at once.)
// Afterwards every snapshot is there, `restic check --read-data` passes, restores are byte-exact, and the
// server's peak RSS (VmHWM, polled from /proc) stays within its idle size + the memory budget + a fixed slack.
// A second part pins the budget's behaviour down with raw requests: an upload that cannot get memory is
// answered 503 with Retry-After (it is not queued without bound), and succeeds once memory is free again.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { promises as fsp, readFileSync } from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { dmctl, request, restic, restUrl, sha256hex, startServerProcess, tmpDir, type ServerProcess } from '../support/server-helpers.js';

const MiB = 1024 * 1024;
const CLIENTS = 20;
const ROUNDS = Number(process.env.DM_LOAD_ROUNDS ?? 12);
/** New data per client and round: one large file and a few small ones, all incompressible. */
const ROUND_FILES = [2 * MiB + 12345, 640 * 1024, 200 * 1024, 64 * 1024, 3000];
/**
 * The budget is set well below what 20 clients upload at once (20 packs of about 3 MiB), so the budget, not
 * the client count, decides what the server holds; requests that do not get memory within the wait are
 * answered 503 and restic retries them.
 */
const BUDGET = Number(process.env.DM_LOAD_BUDGET_MIB ?? 32) * MiB;
const MAX_BODY = Math.min(BUDGET, 20 * MiB);
/**
 * The baseline is the server's own peak before the load (VmHWM once every client has initialised its
 * repository): code, TLS, and scrypt's 16 MiB per password check on up to four libuv threads, whose malloc
 * arenas keep it. During the load the server may add, on top of that:
 * - the budget: bodies held by requests (uploads exactly their Content-Length, downloads one 1 MiB piece);
 * - bodies already released but not yet collected: V8 frees buffers at its next full GC, which external
 *   memory growth of about 64 MiB forces at the latest;
 * - what malloc keeps after freeing (arenas of the TLS and file-system threads, varying body sizes) and the
 *   TLS state of 20-60 connections: measured at 50-80 MiB while 20 `check --read-data` download at once.
 * So peak <= baseline + budget + 128 MiB. Downloads held whole (the server before this bound) peaked at
 * about baseline + 270 MiB in this very test, and uploads without a budget grow with clients x pack size.
 */
const SLACK = 128 * MiB;

function vm(pid: number, key: 'VmHWM' | 'VmRSS'): number {
  const m = new RegExp(`${key}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no ${key} for pid ${pid}`);
  return Number(m[1]) * 1024;
}

const mib = (n: number) => (n / MiB).toFixed(1);

describe('server under load: 20 restic clients over HTTPS', () => {
  const dir = tmpDir('server-load');
  const repoDir = path.join(dir, 'repo');
  const credDir = path.join(dir, 'credentials');
  const tlsDir = path.join(dir, 'tls');
  const cacert = path.join(tlsDir, 'cert.pem');
  const METRICS_PW = 'metrics-' + crypto.randomBytes(6).toString('hex');
  const clients = Array.from({ length: CLIENTS }, (_, i) => ({
    user: `client${String(i).padStart(2, '0')}`,
    host: `host-${i}`,
    password: crypto.randomBytes(9).toString('base64url'),
    data: path.join(dir, 'data', `c${i}`),
    files: new Map<string, string>(), // relative name -> sha256
  }));
  let srv: ServerProcess;
  let pid: number;
  let baseHwm = 0;
  let peakSeen = 0;
  let poll: NodeJS.Timeout | undefined;
  const opts = (c: (typeof clients)[number]) => ({ repo: restUrl(srv.port, c.user, c.password, `${c.user}/`), password: c.password, cacert });

  before(async () => {
    await fsp.mkdir(credDir, { recursive: true });
    await fsp.writeFile(path.join(credDir, 'metrics'), `metrics@monitoring:${METRICS_PW}\n`, { mode: 0o600 });
    for (const c of clients) {
      await fsp.writeFile(path.join(credDir, c.user), `${c.user}@${c.host}:${c.password}\n`, { mode: 0o600 });
      await fsp.mkdir(c.data, { recursive: true });
    }
    srv = await startServerProcess(
      ['--repo', repoDir, '--tls-generate-cert', '--tls-out-dir', tlsDir, '--client-credentials-dir', credDir, '--client-credentials-role', 'append', '--private-repos',
        '--memory-budget-bytes', String(BUDGET), '--max-body-bytes', String(MAX_BODY), '--log-level', 'warn'],
      dir,
      30_000,
    );
    pid = srv.proc.pid!;
    const inits = await Promise.all(clients.map((c) => restic(['init'], opts(c))));
    for (const r of inits) assert.equal(r.code, 0, r.stderr);
    baseHwm = vm(pid, 'VmHWM');
    poll = setInterval(() => {
      try {
        peakSeen = Math.max(peakSeen, vm(pid, 'VmHWM'));
      } catch {
        /* the process is gone: the test reports it */
      }
    }, 250);
  });

  after(async () => {
    if (poll) clearInterval(poll);
    const code = await srv?.stop();
    assert.equal(code, 0, 'server exits cleanly on SIGTERM');
    await fsp.rm(dir, { recursive: true, force: true });
  });

  async function addRoundData(c: (typeof clients)[number], round: number): Promise<void> {
    for (const [k, size] of ROUND_FILES.entries()) {
      const name = `r${round}-f${k}.bin`;
      const buf = crypto.randomBytes(size);
      await fsp.writeFile(path.join(c.data, name), buf);
      c.files.set(name, sha256hex(buf));
    }
  }

  it(`${CLIENTS} clients x ${ROUNDS} rounds: every snapshot is there, check --read-data passes, memory stays within the budget`, { timeout: 175_000 }, async () => {
    const t0 = Date.now();
    const failures: string[] = [];
    let retries = 0;
    const retryKinds = new Map<string, number>();
    await Promise.all(
      clients.map(async (c) => {
        const o = opts(c);
        for (let r = 0; r < ROUNDS; r++) {
          await addRoundData(c, r);
          const b = await restic(['backup', '--host', c.host, '--tag', `round-${r}`, c.data], o);
          for (const m of b.stderr.matchAll(/(\w+)\(<(\w+)\/[0-9a-f]+>[^)]*\) returned error, retrying after [^:]+: (.{0,60})/g)) {
            retries++;
            const k = `${m[1]} ${m[2]}: ${m[3].replace(/[0-9a-f]{10,}/g, '…')}`;
            retryKinds.set(k, (retryKinds.get(k) ?? 0) + 1);
          }
          if (b.code !== 0) failures.push(`${c.user} round ${r}: exit ${b.code}: ${b.stderr.slice(-400)}`);
        }
      }),
    );
    const backupSecs = (Date.now() - t0) / 1000;
    const hwmAfterBackups = vm(pid, 'VmHWM');
    assert.deepEqual(failures, []);

    // In every client's repository: its snapshots, one per round, and nothing else.
    const lists = await Promise.all(clients.map((c) => restic(['snapshots', '--json'], opts(c))));
    for (const [i, c] of clients.entries()) {
      assert.equal(lists[i].code, 0, lists[i].stderr);
      const list = JSON.parse(lists[i].stdout) as { hostname: string; tags?: string[]; paths: string[] }[];
      const seen = list.map((s) => `${s.hostname}/${(s.tags ?? []).join(',')}:${s.paths.join(',')}`).sort();
      assert.deepEqual(seen, Array.from({ length: ROUNDS }, (_, r) => `${c.host}/round-${r}:${c.data}`).sort(), c.user);
    }

    // Every repository passes restic's own full check (all packs read back through the server).
    const checks = await Promise.all(clients.map((c) => restic(['check', '--read-data'], opts(c))));
    for (const [i, ck] of checks.entries()) {
      assert.equal(ck.code, 0, `${clients[i].user}: ${ck.stderr}${ck.stdout}`);
      assert.match(ck.stdout, /no errors were found/);
    }

    // Two clients' last snapshots restore byte for byte.
    for (const c of [clients[3], clients[CLIENTS - 1]]) {
      const target = path.join(dir, 'restore', c.user);
      const rr = await restic(['restore', 'latest', '--target', target], opts(c));
      assert.equal(rr.code, 0, rr.stderr);
      for (const [name, sum] of c.files) {
        assert.equal(sha256hex(await fsp.readFile(path.join(target, c.data, name))), sum, `${c.user}/${name}`);
      }
    }

    const hwm = vm(pid, 'VmHWM');
    peakSeen = Math.max(peakSeen, hwm);
    // The `metrics` user (read role) may read /metrics: how often the budget turned a request away.
    const metrics = await request({ port: srv.port, ca: readFileSync(cacert, 'utf8') }, { path: '/metrics', user: 'metrics', password: METRICS_PW });
    assert.equal(metrics.status, 200);
    const rejected = Number(/^dmctl_server_budget_rejections_total (\d+)$/m.exec(metrics.body.toString())?.[1]);
    assert.ok(Number.isInteger(rejected));
    assert.match(metrics.body.toString(), new RegExp(`^dmctl_server_buffer_limit_bytes ${BUDGET}$`, 'm'));
    const ingested = clients.length * ROUNDS * ROUND_FILES.reduce((a, b) => a + b, 0);
    const bound = baseHwm + BUDGET + SLACK;
    console.log(
      `# load: ${CLIENTS} clients x ${ROUNDS} rounds, ${mib(ingested)} MiB in ${backupSecs.toFixed(1)} s (${mib(ingested / backupSecs)} MiB/s), ` +
        `503s ${rejected}, restic retries ${retries} ${JSON.stringify(Object.fromEntries(retryKinds))}; server peak RSS before ${mib(baseHwm)} MiB, after backups ${mib(hwmAfterBackups)} MiB, at the end ${mib(peakSeen)} MiB, bound ${mib(bound)} MiB (budget ${mib(BUDGET)} MiB)`,
    );
    assert.ok(peakSeen <= bound, `peak RSS ${mib(peakSeen)} MiB exceeds baseline ${mib(baseHwm)} + budget ${mib(BUDGET)} + slack ${mib(SLACK)} MiB`);
  });
});

describe('server memory budget: 503 with Retry-After instead of an unbounded queue', () => {
  const dir = tmpDir('server-budget');
  const LIMIT = 1 * MiB;
  let srv: ServerProcess;
  let ca: string;
  const user = 'writer';
  const password = crypto.randomBytes(9).toString('base64url');

  before(async () => {
    const credDir = path.join(dir, 'credentials');
    await fsp.mkdir(credDir, { recursive: true });
    await fsp.writeFile(path.join(credDir, 'w'), `${user}@h:${password}\n`, { mode: 0o600 });
    srv = await startServerProcess(
      ['--repo', path.join(dir, 'repo'), '--tls-generate-cert', '--tls-out-dir', path.join(dir, 'tls'), '--client-credentials-dir', credDir,
        '--client-credentials-role', 'full', '--memory-budget-bytes', String(LIMIT), '--max-body-bytes', String(LIMIT)],
      dir,
    );
    ca = readFileSync(path.join(dir, 'tls', 'cert.pem'), 'utf8');
    const r = await request({ port: srv.port, ca }, { method: 'POST', path: '/?create=true', user, password });
    assert.equal(r.status, 200);
  });

  after(async () => {
    assert.equal(await srv?.stop(), 0);
    await fsp.rm(dir, { recursive: true, force: true });
  });

  it('a held upload spends the budget; the next one gets 503 + Retry-After within the wait, then succeeds once memory is free', { timeout: 60_000 }, async () => {
    const big = crypto.randomBytes(LIMIT - 1000);
    const small = crypto.randomBytes(300 * 1024);
    // Upload A: headers and half the body, then it stalls while holding its reservation (its whole Content-Length).
    let resolveA!: (status: number) => void;
    const aDone = new Promise<number>((r) => (resolveA = r));
    const a = https.request(
      {
        host: '127.0.0.1', port: srv.port, method: 'POST', path: `/data/${sha256hex(big)}`, ca, agent: false,
        headers: { 'Content-Length': big.length, Authorization: 'Basic ' + Buffer.from(`${user}:${password}`).toString('base64') },
      },
      (res) => {
        res.resume();
        res.on('end', () => resolveA(res.statusCode ?? 0));
      },
    );
    a.on('error', () => resolveA(-1));
    a.write(big.subarray(0, big.length / 2));
    await new Promise((r) => setTimeout(r, 500)); // the server has reserved A's bytes

    const t0 = Date.now();
    const b = await request({ port: srv.port, ca }, { method: 'POST', path: `/data/${sha256hex(small)}`, user, password, body: small });
    const waited = Date.now() - t0;
    assert.equal(b.status, 503, b.body.toString());
    assert.ok(Number(b.headers['retry-after']) >= 1, `Retry-After: ${b.headers['retry-after']}`);
    assert.ok(waited >= 2000 && waited < 15_000, `answered after ${waited} ms: waits a bounded time`);
    // Nothing of B was stored.
    const head = await request({ port: srv.port, ca }, { method: 'HEAD', path: `/data/${sha256hex(small)}`, user, password });
    assert.equal(head.status, 404);

    // A finishes; its memory is released and B's retry goes through.
    a.end(big.subarray(big.length / 2));
    assert.equal(await aDone, 200);
    const b2 = await request({ port: srv.port, ca }, { method: 'POST', path: `/data/${sha256hex(small)}`, user, password, body: small });
    assert.equal(b2.status, 200, b2.body.toString());

    // A file larger than the whole budget (put there by other means) is sent in budget-sized pieces and arrives
    // whole, also as a range across pieces.
    const huge = crypto.randomBytes(2 * LIMIT + 4321);
    const id = sha256hex(huge);
    await fsp.mkdir(path.join(dir, 'repo', 'data', id.slice(0, 2)), { recursive: true });
    await fsp.writeFile(path.join(dir, 'repo', 'data', id.slice(0, 2), id), huge);
    const got = await request({ port: srv.port, ca }, { path: `/data/${id}`, user, password });
    assert.equal(got.status, 200);
    assert.equal(got.body.length, huge.length);
    assert.ok(got.body.equals(huge));
    const part = await request({ port: srv.port, ca }, { path: `/data/${id}`, user, password, headers: { Range: `bytes=1000-${LIMIT + 5000}` } });
    assert.equal(part.status, 206);
    assert.ok(part.body.equals(huge.subarray(1000, LIMIT + 5001)));
  });

  it('a budget smaller than the largest upload is refused at start (one line, usage exit code)', async () => {
    const r = await dmctl(['server', 'start', '--repo', path.join(dir, 'repo2'), '--insecure-http', '--address', '127.0.0.1:0', '--memory-budget-bytes', String(8 * MiB)]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /^dmctl: the memory budget \(8388608 bytes\) is smaller than the largest accepted upload/m);
    assert.match(r.stderr, /^hint: /m);
  });
});
