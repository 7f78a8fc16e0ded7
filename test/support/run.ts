// Child-process helpers for tests that drive dmctl and the real restic binary: run a command with
// its own environment, feed stdin (bytes or a generated stream), capture stdout as bytes, stderr
// as text and the exit status. Nothing here throws on a non-zero exit: use `ok()` to insist.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

/** The project root (works from test/support and dist/test/support). */
export const PROJECT_ROOT = (() => {
  let d = here;
  while (!existsSync(path.join(d, 'package.json'))) d = path.dirname(d);
  return d;
})();

/** dmctl's entry point. */
export const DMCTL_BIN = path.join(PROJECT_ROOT, 'bin', 'run.js');

/** The restic binary (RESTIC_BIN overrides). */
export const RESTIC_BIN = process.env.RESTIC_BIN ?? 'restic';

export interface RunResult {
  /** Exit code, or null when killed by a signal. */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: string;
  /** The command line, for messages. */
  command: string;
  durationMs: number;
}

export interface RunOptions {
  /** Variables added to (or, when undefined, removed from) the inherited environment. */
  env?: Record<string, string | undefined>;
  cwd?: string;
  /** Data for stdin: bytes, or chunks produced one at a time (with back-pressure). Default: empty stdin. */
  input?: Buffer | string | AsyncIterable<Uint8Array> | Iterable<Uint8Array>;
  /** Kill the process (SIGKILL) after this long; the result then has signal 'SIGKILL'. */
  timeoutMs?: number;
  /** Do not keep stdout (count it only) when it is large and the test only needs its hash. */
  onStdout?: (chunk: Buffer) => void;
}

function mergedEnv(extra: Record<string, string | undefined> | undefined): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const [k, v] of Object.entries(extra ?? {})) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return env;
}

/** Runs `cmd args...` and collects its result. */
export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const started = Date.now();
  const command = [cmd, ...args].map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : JSON.stringify(a))).join(' ');
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: mergedEnv(opts.env), cwd: opts.cwd, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    let timer: NodeJS.Timeout | undefined;
    if (opts.timeoutMs) timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs);
    child.stdout.on('data', (d: Buffer) => (opts.onStdout ? opts.onStdout(d) : out.push(d)));
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (d: string) => {
      if (err.length < 1 << 20) err += d;
    });
    child.on('error', (e) => {
      if (timer) clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      resolve({ code, signal, stdout: Buffer.concat(out), stderr: err, command, durationMs: Date.now() - started });
    });
    // A child that exits without reading all of stdin gives EPIPE: that is its business, not ours.
    child.stdin.on('error', () => {});
    const input = opts.input;
    if (input === undefined) child.stdin.end();
    else if (typeof input === 'string' || Buffer.isBuffer(input)) child.stdin.end(input);
    else {
      void (async () => {
        try {
          for await (const chunk of input as AsyncIterable<Uint8Array>) {
            if (!child.stdin.write(chunk)) {
              await new Promise<void>((r) => {
                const done = (): void => {
                  child.stdin.off('drain', done);
                  child.stdin.off('close', done);
                  r();
                };
                child.stdin.on('drain', done);
                child.stdin.on('close', done);
              });
              if (child.stdin.destroyed) return;
            }
          }
        } finally {
          child.stdin.end();
        }
      })();
    }
  });
}

/** Throws (with the command, exit status and stderr) unless the process exited 0. */
export function ok(r: RunResult): RunResult {
  if (r.code !== 0) {
    throw new Error(`${r.command} exited with ${r.code ?? r.signal}:\n${r.stderr.slice(-4000)}`);
  }
  return r;
}

export interface ToolEnv {
  repo: string;
  password: string;
  /** Directory for caches and the dmctl connection file, so tests never touch the real home. */
  home: string;
}

/** A fresh, isolated tool environment under a new temporary directory. */
export function toolEnv(repo: string, password = 'interop-test-pw', home = mkdtempSync(path.join(os.tmpdir(), 'dmctl-home-'))): ToolEnv {
  mkdirSync(path.join(home, 'restic-cache'), { recursive: true });
  return { repo, password, home };
}

/** Runs dmctl (`node bin/run.js ...`) against `t.repo` with the password in DM_PASSWORD. */
export function dmctl(t: ToolEnv, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return run(process.execPath, [DMCTL_BIN, ...args], {
    ...opts,
    env: {
      DM_REPOSITORY: t.repo,
      DM_PASSWORD: t.password,
      DM_PASSWORD_FILE: undefined,
      DM_CONFIG_FILE: undefined,
      RESTIC_REPOSITORY: undefined,
      RESTIC_PASSWORD: undefined,
      RESTIC_PASSWORD_FILE: undefined,
      XDG_CONFIG_HOME: path.join(t.home, 'config'),
      XDG_CACHE_HOME: undefined,
      DM_CACHE_DIR: undefined,
      HOME: t.home,
      NO_COLOR: '1',
      ...opts.env,
    },
  });
}

/** Runs restic against `t.repo` with RESTIC_PASSWORD and a private cache directory. */
export function restic(t: ToolEnv, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return run(RESTIC_BIN, args, {
    ...opts,
    env: {
      RESTIC_REPOSITORY: t.repo,
      RESTIC_PASSWORD: t.password,
      RESTIC_PASSWORD_FILE: undefined,
      RESTIC_CACHE_DIR: path.join(t.home, 'restic-cache'),
      HOME: t.home,
      ...opts.env,
    },
  });
}

/** Parses stdout as one JSON document. */
export function json<T = unknown>(r: RunResult): T {
  try {
    return JSON.parse(r.stdout.toString('utf8')) as T;
  } catch (e) {
    throw new Error(`${r.command}: stdout is not JSON (${(e as Error).message}):\n${r.stdout.toString('utf8').slice(0, 2000)}`);
  }
}

/** Parses stdout as JSON lines (restic's `ls --json`, `backup --json`). */
export function jsonLines<T = Record<string, unknown>>(r: RunResult): T[] {
  return r.stdout
    .toString('utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as T);
}
