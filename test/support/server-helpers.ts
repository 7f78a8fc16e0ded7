// Helpers for server tests: temp folders, raw HTTPS requests (paths sent exactly as given), the real restic
// client, and a dmctl server started as a process (stopped by PID).
import { spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import { existsSync, mkdtempSync, promises as fsp, readFileSync } from 'node:fs';
import https from 'node:https';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const RUN_JS = path.join(ROOT, 'bin', 'run.js');

export function tmpDir(tag: string): string {
  return mkdtempSync(path.join(os.tmpdir(), `dmctl-${tag}-`));
}

export function sha256hex(b: Uint8Array | string): string {
  return crypto.createHash('sha256').update(b).digest('hex');
}

export interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  ms: number;
}

export interface ReqOpts {
  method?: string;
  path: string;
  user?: string;
  password?: string;
  body?: Buffer | string;
  headers?: Record<string, string | number>;
  /** Leave out Content-Length (send chunked). */
  chunked?: boolean;
}

/** One request with its own connection; the path is sent byte for byte. */
export function request(base: { port: number; ca?: string; secure?: boolean }, o: ReqOpts): Promise<Reply> {
  const t0 = Date.now();
  const body = o.body === undefined ? undefined : Buffer.isBuffer(o.body) ? o.body : Buffer.from(o.body);
  const headers: Record<string, string | number> = { Connection: 'close', ...(o.headers ?? {}) };
  if (o.user !== undefined) headers.Authorization = 'Basic ' + Buffer.from(`${o.user}:${o.password ?? ''}`).toString('base64');
  if (body && !o.chunked) headers['Content-Length'] = body.length;
  if (body && o.chunked) headers['Transfer-Encoding'] = 'chunked';
  const mod = base.secure === false ? http : https;
  return new Promise((resolve, reject) => {
    const req = mod.request(
      { host: '127.0.0.1', port: base.port, method: o.method ?? 'GET', path: o.path, headers, ca: base.ca, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), ms: Date.now() - t0 }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

export interface ResticResult {
  code: number;
  stdout: string;
  stderr: string;
  stdoutBytes?: Buffer;
}

/** Runs the real restic with the given repository URL and password. */
export function restic(args: string[], o: { repo: string; password: string; cacert?: string; input?: Buffer | string; cacheDir?: string }): Promise<ResticResult> {
  const full = [...(o.cacert ? ['--cacert', o.cacert] : []), '--no-cache', ...args];
  return new Promise((resolve, reject) => {
    const p = spawn('restic', full, {
      env: { PATH: process.env.PATH, HOME: process.env.HOME ?? '/root', RESTIC_REPOSITORY: o.repo, RESTIC_PASSWORD: o.password },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    p.stdout.on('data', (c: Buffer) => out.push(c));
    p.stderr.on('data', (c: Buffer) => err.push(c));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code: code ?? -1, stdout: Buffer.concat(out).toString(), stdoutBytes: Buffer.concat(out), stderr: Buffer.concat(err).toString() }));
    p.stdin.end(o.input);
  });
}

export function restUrl(port: number, user: string, password: string, prefix = ''): string {
  return `rest:https://${encodeURIComponent(user)}:${encodeURIComponent(password)}@127.0.0.1:${port}/${prefix}`;
}

export interface ServerProcess {
  proc: ChildProcess;
  port: number;
  fingerprint?: string;
  stdout: () => string;
  stop(): Promise<number | null>;
}

/** Runs `dmctl server start ARGS --server-data-file F` and waits for the data file (written before ready). */
export async function startServerProcess(args: string[], dir: string, timeoutMs = 20_000): Promise<ServerProcess> {
  const dataFile = path.join(dir, `server-data-${crypto.randomBytes(3).toString('hex')}.json`);
  const proc = spawn(process.execPath, [RUN_JS, 'server', 'start', '--address', '127.0.0.1:0', '--server-data-file', dataFile, ...args], {
    cwd: ROOT,
    env: { ...process.env, PROTOCOLS: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  proc.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  proc.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  const t0 = Date.now();
  while (!existsSync(dataFile)) {
    if (proc.exitCode !== null) throw new Error(`server exited with ${proc.exitCode}: ${err}${out}`);
    if (Date.now() - t0 > timeoutMs) {
      proc.kill('SIGKILL');
      throw new Error(`server did not start: ${err}${out}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const data = JSON.parse(readFileSync(dataFile, 'utf8')) as { port: number; fingerprint?: string };
  return {
    proc,
    port: data.port,
    fingerprint: data.fingerprint,
    stdout: () => out,
    async stop() {
      if (proc.exitCode === null && proc.pid) process.kill(proc.pid, 'SIGTERM');
      const t = setTimeout(() => proc.pid && proc.exitCode === null && process.kill(proc.pid, 'SIGKILL'), 10_000);
      const code = await exited;
      clearTimeout(t);
      return code;
    },
  };
}

/** Runs `dmctl ARGS` to completion. */
export function dmctl(args: string[], env: NodeJS.ProcessEnv = {}): Promise<ResticResult> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [RUN_JS, ...args], { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (c: Buffer) => (out += c.toString()));
    p.stderr.on('data', (c: Buffer) => (err += c.toString()));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code: code ?? -1, stdout: out, stderr: err }));
  });
}

export async function writeSecret(file: string, text: string): Promise<string> {
  await fsp.writeFile(file, text + '\n', { mode: 0o600 });
  return file;
}

export async function waitFor(fn: () => Promise<boolean>, timeoutMs: number, stepMs = 100): Promise<number> {
  const t0 = Date.now();
  for (;;) {
    if (await fn()) return Date.now() - t0;
    if (Date.now() - t0 > timeoutMs) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}
