// Real storage servers for integration tests, on 127.0.0.1 with random free ports, started and
// stopped by PID: Ceph radosgw (S3), azurite (Azure Blob), Firebase's storage emulator (GCS) and
// `rclone serve restic` (REST). See ../shared/testenv/README.md; install with
// scripts/install-test-servers.sh.
import { spawn, ChildProcess } from 'node:child_process';
import { promises as fsp, existsSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
/** Project root (works from test/support and dist/test/support). */
export const projectRoot = (() => {
  let d = here;
  while (!existsSync(path.join(d, 'package.json'))) d = path.dirname(d);
  return d;
})();
// shared/testenv sits beside the checkout (CI clones main with shared/ next to it).
const TESTENV =
  process.env.DMCTL_TESTENV ??
  [path.join(projectRoot, '..', 'shared', 'testenv'), '/work/shared/testenv'].find((d) => existsSync(path.join(d, 'ceph-rgw.sh'))) ??
  path.join(projectRoot, '..', 'shared', 'testenv');

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

/** Starts a server up to three times, each on a new free port (another test may grab the port first). */
async function withFreshPortRetry<T>(start: () => Promise<T>): Promise<T> {
  let last: unknown;
  for (let i = 0; i < 3; i++) {
    try {
      return await start();
    } catch (err) {
      last = err;
    }
  }
  throw last;
}

export async function waitForPort(port: number, timeoutMs: number, proc?: ChildProcess): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (proc && proc.exitCode !== null) throw new Error(`server exited with code ${proc.exitCode} before listening on ${port}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => { s.destroy(); resolve(true); });
      s.once('error', () => resolve(false));
    });
    if (ok) {
      if (!proc) return;
      // Something answers on the port, but it may be another test's server that took the same
      // "free" port first (test files run in parallel): ours must still be alive a moment later
      // (a failed bind makes it exit) and must have said that it listens on this port.
      await new Promise((r) => setTimeout(r, 300));
      if (proc.exitCode !== null) throw new Error(`server exited with code ${proc.exitCode}: port ${port} was taken`);
      return;
    }
    if (Date.now() > deadline) throw new Error(`nothing listens on 127.0.0.1:${port} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function killPid(pid: number | undefined, graceMs = 3000): Promise<void> {
  if (!pid) return;
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* gone */
  }
}

export interface Server {
  stop(): Promise<void>;
}

/**
 * Starts servers together. If one fails, the ones that did start are stopped before the error is
 * rethrown: a test file whose before hook fails must not leave servers running (they keep its
 * process alive, and the GCS emulator's lock held, until the test runner's timeout).
 */
export async function startTogether<T extends readonly Promise<Server>[]>(starts: readonly [...T]): Promise<{ -readonly [K in keyof T]: Awaited<T[K]> }> {
  const settled = await Promise.allSettled(starts);
  const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) {
    await Promise.allSettled(settled.map((r) => (r.status === 'fulfilled' ? r.value.stop() : undefined)));
    throw failed.reason;
  }
  return settled.map((r) => (r as PromiseFulfilledResult<Server>).value) as unknown as { -readonly [K in keyof T]: Awaited<T[K]> };
}

function spawnServer(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): ChildProcess & { output: () => string } {
  const child = spawn(cmd, args, { cwd: opts.cwd, env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const keep = (c: Buffer) => {
    out = (out + c.toString()).slice(-4000);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  return Object.assign(child, { output: () => out });
}

// ---------- Ceph radosgw (S3) ----------

export interface RadosgwServer extends Server {
  endpoint: string;
  port: number;
  accessKeyId: string;
  secretAccessKey: string;
  dir: string;
}

export interface RadosgwOptions {
  memstoreBytes?: number;
  /** Extra radosgw settings for its [client.rgw.a] section, e.g. { 'rgw sts key': '…' }. */
  rgwConfig?: Record<string, string>;
}

async function startRadosgwOnce(opts: RadosgwOptions): Promise<RadosgwServer> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'dmctl-rgw-'));
  // Two different ports: two `freePort()` calls in a row can return the same one. Seen once: the
  // monitor took it, radosgw could not bind, and the client got the monitor's msgr banner.
  const rgwPort = await freePort();
  let monPort = await freePort();
  while (monPort === rgwPort) monPort = await freePort();
  // The shared script, with its fixed ports swapped for free ones.
  // monmaptool takes a bare ip:port as msgr v2 unless the port is 6789: spell the v1 address out.
  const script = (await fsp.readFile(path.join(TESTENV, 'ceph-rgw.sh'), 'utf8'))
    .replaceAll('7480', String(rgwPort))
    .replace('--add a 127.0.0.1:6789', `--addv a [v1:127.0.0.1:${monPort}]`)
    .replaceAll('6789', String(monPort))
    .replace('memstore device bytes = 2147483648', `memstore device bytes = ${opts.memstoreBytes ?? 2147483648}`)
    .replace('rgw data = $C/rgw', ['rgw data = $C/rgw', ...Object.entries(opts.rgwConfig ?? {}).map(([k, v]) => `${k} = ${v}`)].join('\n'));
  const scriptPath = path.join(dir, 'ceph-rgw.sh');
  await fsp.writeFile(scriptPath, script, { mode: 0o755 });
  const cluster = path.join(dir, 'c');
  /** A daemon's pid as the script wrote it (0 before it has). */
  const pidOf = async (n: 'rgw' | 'osd' | 'mon') => +(await fsp.readFile(path.join(cluster, 'run', `${n}.fgpid`), 'utf8').catch(() => '')) || 0;
  const pids = async () => {
    const out: number[] = [];
    for (const n of ['rgw', 'osd', 'mon'] as const) {
      const pid = await pidOf(n);
      if (pid > 0) out.push(pid);
    }
    return out;
  };
  const stop = async () => {
    for (const pid of await pids()) await killPid(pid, 4000);
    await fsp.rm(dir, { recursive: true, force: true }).catch(() => {});
  };
  try {
    await new Promise<void>((resolve, reject) => {
      // Own process group: on a timeout the whole group (script, ceph tools, daemons) is killed,
      // so a hung `radosgw-admin` or `ceph` call is not left behind.
      // (spawn, not execFile: execFile drops the `detached` option, so the group kill found no group)
      const child = spawn('bash', ['-x', scriptPath, cluster], { detached: true, stdio: ['ignore', 'ignore', 'pipe'] });
      // A daemon that exits during the start (see startRadosgw) is not noticed by the script, which
      // then waits ~90 s for a cluster without it: end this attempt at once instead.
      let died = '';
      const watch = setInterval(async () => {
        for (const n of ['mon', 'osd'] as const) {
          const pid = await pidOf(n);
          if (pid > 0 && !(await alive(pid)) && !died) {
            died = `ceph-${n} exited during the start; `;
            try { process.kill(-child.pid!, 'SIGKILL'); } catch { /* gone */ }
          }
        }
      }, 250);
      let stderr = '';
      child.stderr!.on('data', (c: Buffer) => { stderr = (stderr + c.toString()).slice(-4000); });
      child.on('close', async (code: number | null, signal: NodeJS.Signals | null) => {
        clearTimeout(timer);
        clearInterval(watch);
        if (code === 0) return resolve();
        try { process.kill(-child.pid!, 'SIGKILL'); } catch { /* gone */ }
        let logs = '';
        // (mon.a.log: a monitor that will not start says why there, e.g. a file system under 5% free)
        for (const f of ['mon.out', 'mon.a.log', 'osd.out', 'osd-mkfs.out', 'rgw.out']) {
          const text = await fsp.readFile(path.join(cluster, 'log', f), 'utf8').catch(() => '');
          logs += `\n--- ${f}: ${(f === 'mon.a.log' ? text.split('\n').filter((l) => / -1 /.test(l) || /adjust/.test(l)).join('\n') : text).slice(-400)}`;
        }
        reject(new Error(`ceph-rgw.sh failed: ${died}exit ${code ?? signal} ${stderr.slice(-600)}${logs}`));
      });
      const timer = setTimeout(() => {
        try { process.kill(-child.pid!, 'SIGKILL'); } catch { /* gone */ }
      }, 90_000);
    });
    await waitForPort(rgwPort, 10_000);
    // The shared script waits up to 60 s for radosgw and then goes on regardless: the port must be
    // radosgw's, answering HTTP, or this start failed and the next one gets fresh ports.
    await assertHttp(rgwPort);
  } catch (err) {
    await stop();
    throw err;
  }
  return { endpoint: `http://127.0.0.1:${rgwPort}`, port: rgwPort, accessKeyId: 'DMTESTACCESSKEY', secretAccessKey: 'DMTESTSECRETKEY', dir, stop };
}

/** Whether a process runs (a zombie, exited but not yet reaped by the script, does not). */
async function alive(pid: number): Promise<boolean> {
  const stat = await fsp.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  // pid (comm) state ...: comm may hold spaces and parentheses, the state follows the last ')'
  return stat !== '' && stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
}

async function assertHttp(port: number): Promise<void> {
  const res = await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(10_000) })
    .catch((err: Error) => { throw new Error(`radosgw does not answer HTTP on ${port}: ${(err.cause as Error)?.message ?? err.message}`); });
  await res.arrayBuffer();
  if (!res.headers.get('x-amz-request-id')) throw new Error(`the server on ${port} is not radosgw (HTTP ${res.status}, no x-amz-request-id)`);
}

/** Starts a one-node Ceph cluster with radosgw (about 12 s, 400 MB); up to five attempts, each in a fresh folder. */
export async function startRadosgw(opts: RadosgwOptions = {}): Promise<RadosgwServer> {
  // Ceph's OSD sometimes exits at start: its first command to the monitor carries an all-zero fsid
  // (the monitor's log: "handle_command on fsid 00000000-… != …"), the monitor refuses it ("wrong
  // fsid"). A new cluster in a new folder starts; such an attempt ends within a second or two (see
  // the watch in startRadosgwOnce), so five attempts cost little. (When each failed attempt waited
  // ~90 s, three of them and the wait for the start lock used up a suite's 300 s set-up.) Clusters
  // are started one at a time across test processes (a port picked as free could be taken by
  // another start before it is bound); running clusters do not conflict.
  const release = await acquireFileLock(RGW_START_LOCK, 'radosgw start', 900_000);
  try {
    let last: unknown;
    for (let i = 0; i < 5; i++) {
      try {
        return await startRadosgwOnce(opts);
      } catch (err) {
        last = err;
      }
    }
    throw last;
  } finally {
    await release();
  }
}

const RGW_START_LOCK = path.join(os.tmpdir(), 'dmctl-test-radosgw-start.lock');

// ---------- azurite (Azure Blob) ----------

export const AZURITE_ACCOUNT = 'devstoreaccount1';
export const AZURITE_KEY = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';

export interface AzuriteServer extends Server {
  endpoint: string;
  port: number;
  connectionString: string;
  accountName: string;
  accountKey: string;
}

export interface AzuriteOptions {
  /** Serve https with this certificate and key (PEM file paths); the endpoint is then https://. */
  cert?: string;
  key?: string;
}

export async function startAzurite(opts: AzuriteOptions = {}): Promise<AzuriteServer> {
  return withFreshPortRetry(() => startAzuriteOnce(opts));
}

async function startAzuriteOnce(opts: AzuriteOptions): Promise<AzuriteServer> {
  const port = await freePort();
  const bin = path.join(projectRoot, 'node_modules', '.bin', 'azurite-blob');
  const tlsArgs = opts.cert && opts.key ? ['--cert', opts.cert, '--key', opts.key] : [];
  const child = spawnServer(bin, ['--blobHost', '127.0.0.1', '--blobPort', String(port), '--inMemoryPersistence', '--silent', '--disableTelemetry', '--skipApiVersionCheck', '--loose', ...tlsArgs]);
  try {
    await waitForPort(port, 30_000, child);
  } catch (err) {
    await killPid(child.pid);
    throw new Error(`azurite did not start: ${(err as Error).message}\n${child.output()}`);
  }
  const scheme = tlsArgs.length ? 'https' : 'http';
  const endpoint = `${scheme}://127.0.0.1:${port}/${AZURITE_ACCOUNT}`;
  return {
    endpoint,
    port,
    accountName: AZURITE_ACCOUNT,
    accountKey: AZURITE_KEY,
    connectionString: `DefaultEndpointsProtocol=${scheme};AccountName=${AZURITE_ACCOUNT};AccountKey=${AZURITE_KEY};BlobEndpoint=${endpoint};`,
    stop: () => killPid(child.pid),
  };
}

// ---------- GCS emulator ----------

export interface GcsEmulator extends Server {
  endpoint: string;
  port: number;
  /** Environment the GCS client needs against the emulator (no metadata-server probing). */
  env: Record<string, string>;
}

export const GCS_CLIENT_ENV = { METADATA_SERVER_DETECTION: 'none', GCE_METADATA_HOST: '127.0.0.1:1', GCE_METADATA_IP: '127.0.0.1:1' };

export async function startGcsEmulator(): Promise<GcsEmulator> {
  // Two Firebase storage emulators at once (test files run in parallel) interfere: the second one's
  // uploads were refused in full runs, never when a file ran alone. One at a time, across processes.
  const release = await acquireGcsLock();
  try {
    const emu = await withFreshPortRetry(() => startGcsEmulatorOnce());
    const stop = emu.stop;
    return { ...emu, stop: async () => { try { await stop(); } finally { await release(); } } };
  } catch (err) {
    await release();
    throw err;
  }
}

const GCS_LOCK = path.join(os.tmpdir(), 'dmctl-test-gcs-emulator.lock');

async function acquireGcsLock(timeoutMs = 600_000): Promise<() => Promise<void>> {
  return acquireFileLock(GCS_LOCK, 'GCS emulator', timeoutMs);
}

/** An exclusive lock file holding the owner's PID; a lock whose owner is gone is broken. */
async function acquireFileLock(lockPath: string, what: string, timeoutMs: number): Promise<() => Promise<void>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await fsp.writeFile(lockPath, String(process.pid), { flag: 'wx' });
      return async () => {
        const owner = await fsp.readFile(lockPath, 'utf8').catch(() => '');
        if (owner === String(process.pid)) await fsp.rm(lockPath, { force: true });
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const owner = Number(await fsp.readFile(lockPath, 'utf8').catch(() => '0'));
      let alive = false;
      try {
        if (owner > 0) {
          process.kill(owner, 0);
          alive = true;
        }
      } catch {
        alive = false;
      }
      if (!alive) await fsp.rm(lockPath, { force: true });
      else if (Date.now() > deadline) throw new Error(`${what} lock held by PID ${owner} for too long`);
      else await new Promise((r) => setTimeout(r, 250));
    }
  }
}

async function startGcsEmulatorOnce(): Promise<GcsEmulator> {
  const port = await freePort();
  const modules = path.join(projectRoot, '.cache', 'firebase', 'node_modules');
  if (!existsSync(path.join(modules, 'firebase-tools'))) throw new Error('firebase-tools is not installed: run scripts/install-test-servers.sh');
  const child = spawnServer(process.execPath, [path.join(TESTENV, 'gcs-emulator.cjs')], { env: { PORT: String(port), NODE_PATH: modules } });
  try {
    await waitForPort(port, 30_000, child);
  } catch (err) {
    await killPid(child.pid);
    throw new Error(`GCS emulator did not start: ${(err as Error).message}\n${child.output()}`);
  }
  return { endpoint: `http://127.0.0.1:${port}`, port, env: { ...GCS_CLIENT_ENV }, stop: () => killPid(child.pid) };
}

// ---------- rclone serve restic (REST) ----------

export interface RestServer extends Server {
  url: string;
  port: number;
  dir: string;
}

export async function startRcloneRestic(dir: string, extraArgs: string[] = []): Promise<RestServer> {
  return withFreshPortRetry(() => startRcloneResticOnce(dir, extraArgs));
}

async function startRcloneResticOnce(dir: string, extraArgs: string[]): Promise<RestServer> {
  const port = await freePort();
  await fsp.mkdir(dir, { recursive: true });
  const child = spawnServer('rclone', ['serve', 'restic', '--addr', `127.0.0.1:${port}`, ...extraArgs, dir], { env: { RCLONE_CONFIG: '/dev/null' } });
  try {
    await waitForPort(port, 15_000, child);
  } catch (err) {
    await killPid(child.pid);
    throw new Error(`rclone serve restic did not start: ${(err as Error).message}\n${child.output()}`);
  }
  return { url: `http://127.0.0.1:${port}/`, port, dir, stop: () => killPid(child.pid) };
}
