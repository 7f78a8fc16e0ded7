// Helpers for the safety tests (crash, bad input, damage, stream memory): deterministic test files,
// tree hashing, the gen-stream generator piped straight into dmctl (the data never passes through
// the test process), kills at a chosen moment, peak RSS, and the "one clear line" stderr check.
// Builds on run.ts (ToolEnv, dmctl(), restic()).
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import { createReadStream, promises as fsp } from 'node:fs';
import path from 'node:path';
import { PROJECT_ROOT, DMCTL_BIN, ToolEnv } from './run.js';

/** The generator script (plain .mjs: not compiled, so always taken from the source tree). */
export const GEN_STREAM = path.join(PROJECT_ROOT, 'test', 'support', 'gen-stream.mjs');

/** Small seeded PRNG (mulberry32) for delays and sizes. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `size` deterministic, incompressible bytes for `seed` (AES-256-CTR keystream). */
export function seededBytes(size: number, seed: string): Buffer {
  const key = crypto.createHash('sha256').update(`file key ${seed}`).digest();
  const iv = crypto.createHash('sha256').update(`file iv ${seed}`).digest().subarray(0, 16);
  return crypto.createCipheriv('aes-256-ctr', key, iv).update(Buffer.alloc(size));
}

export function sha256(buf: Uint8Array): string {
  return crypto.createHash('sha256').update(buf).digest('hex');
}

export async function sha256File(p: string): Promise<string> {
  const h = crypto.createHash('sha256');
  for await (const chunk of createReadStream(p)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** Every regular file under `dir` (relative path → SHA-256). Throws on anything else but dirs. */
export async function hashTree(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  async function walk(d: string, rel: string): Promise<void> {
    for (const e of await fsp.readdir(d, { withFileTypes: true })) {
      const full = path.join(d, e.name);
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) await walk(full, r);
      else if (e.isFile()) out.set(r, await sha256File(full));
      else throw new Error(`unexpected non-file ${full}`);
    }
  }
  await walk(dir, '');
  return out;
}

export interface PipeResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: string;
  durationMs: number;
  /** The test killed dmctl (SIGKILL) before it exited by itself. */
  killed: boolean;
  /** Peak RSS of the dmctl process in KiB, when asked for. */
  peakRssKiB?: number;
}

export interface PipeOptions {
  /** Arguments of gen-stream.mjs; without them dmctl's stdin is empty. */
  gen?: string[];
  /** SIGKILL dmctl this many ms after it was started (if it is still running). */
  killAfterMs?: number;
  /** Poll /proc/PID/status for VmHWM (the kernel's peak RSS of the process). */
  measureRss?: boolean;
  /** Extra environment for dmctl. */
  env?: Record<string, string | undefined>;
  /** Do not keep stdout; pass it here instead (e.g. a hash). */
  onStdout?: (chunk: Buffer) => void;
  /** Called with dmctl's PID once it runs. */
  onSpawn?: (pid: number) => void;
}

function dmctlEnv(t: ToolEnv, extra?: Record<string, string | undefined>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    DM_REPOSITORY: t.repo,
    DM_PASSWORD: t.password,
    XDG_CONFIG_HOME: path.join(t.home, 'config'),
    HOME: t.home,
    NO_COLOR: '1',
  };
  for (const k of ['DM_PASSWORD_FILE', 'DM_CONFIG_FILE', 'RESTIC_REPOSITORY', 'RESTIC_PASSWORD', 'RESTIC_PASSWORD_FILE', 'DM_LOG_LEVEL']) delete env[k];
  for (const [k, v] of Object.entries(extra ?? {})) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return env;
}

function readVmHWM(pid: number): Promise<number | undefined> {
  return fsp.readFile(`/proc/${pid}/status`, 'utf8').then(
    (s) => {
      const m = /^VmHWM:\s+(\d+) kB/m.exec(s);
      return m ? Number(m[1]) : undefined;
    },
    () => undefined,
  );
}

/**
 * Runs `gen-stream.mjs GEN... | dmctl ARGS...` with the pipe made by the OS (gen's stdout is dmctl's
 * stdin), optionally killing dmctl at a given moment or measuring its peak RSS.
 */
export function dmctlPipe(t: ToolEnv, args: string[], opts: PipeOptions = {}): Promise<PipeResult> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const gen = opts.gen ? spawn(process.execPath, [GEN_STREAM, ...opts.gen], { stdio: ['ignore', 'pipe', 'inherit'] }) : undefined;
    const child = spawn(process.execPath, [DMCTL_BIN, ...args], {
      env: dmctlEnv(t, opts.env),
      stdio: [gen ? gen.stdout! : 'ignore', 'pipe', 'pipe'],
    });
    // dmctl owns the read end now; closing ours lets gen see EPIPE when dmctl dies.
    gen?.stdout?.destroy();
    const pid = child.pid!;
    opts.onSpawn?.(pid);
    const out: Buffer[] = [];
    let err = '';
    let killed = false;
    let exited = false;
    let peak = 0;
    let timer: NodeJS.Timeout | undefined;
    let poll: NodeJS.Timeout | undefined;
    if (opts.killAfterMs !== undefined) {
      timer = setTimeout(() => {
        if (!exited) {
          killed = true;
          child.kill('SIGKILL');
        }
      }, opts.killAfterMs);
    }
    if (opts.measureRss) {
      const sample = async () => {
        const v = await readVmHWM(pid);
        if (v !== undefined && v > peak) peak = v;
      };
      poll = setInterval(() => void sample(), 50);
    }
    child.stdout.on('data', (d: Buffer) => (opts.onStdout ? opts.onStdout(d) : out.push(d)));
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (d: string) => {
      if (err.length < 1 << 20) err += d;
    });
    child.on('error', reject);
    // Read VmHWM one last time while the process is a zombie-to-be: 'exit' fires before 'close'.
    child.on('exit', () => {
      exited = true;
    });
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      if (poll) clearInterval(poll);
      if (gen && gen.exitCode === null) gen.kill('SIGKILL');
      resolve({
        code,
        signal,
        stdout: Buffer.concat(out),
        stderr: err,
        durationMs: Date.now() - started,
        killed,
        ...(opts.measureRss ? { peakRssKiB: peak } : {}),
      });
    });
  });
}

/**
 * Runs `gen-stream GEN | dmctl ARGS` under GNU time and returns dmctl's peak RSS (KiB) as the kernel
 * accounts it (ru_maxrss of the process), plus the exit status.
 */
export function dmctlPipePeakRss(t: ToolEnv, args: string[], gen: string[]): Promise<{ code: number | null; peakRssKiB: number; stderr: string; stdout: string; durationMs: number }> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const g = spawn(process.execPath, [GEN_STREAM, ...gen], { stdio: ['ignore', 'pipe', 'inherit'] });
    const child = spawn('/usr/bin/time', ['-f', 'PEAK_RSS_KIB=%M', process.execPath, DMCTL_BIN, ...args], {
      env: dmctlEnv(t),
      stdio: [g.stdout!, 'pipe', 'pipe'],
    });
    g.stdout?.destroy();
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (d: string) => (err += d));
    child.on('error', reject);
    child.on('close', (code) => {
      const m = /PEAK_RSS_KIB=(\d+)/.exec(err);
      if (!m) return reject(new Error(`no peak RSS in time's output: ${err.slice(-2000)}`));
      resolve({ code, peakRssKiB: Number(m[1]), stderr: err.replace(/^PEAK_RSS_KIB=\d+\n?/m, ''), stdout: out, durationMs: Date.now() - started });
    });
  });
}

/**
 * What a user must see when a command fails: exactly one `dmctl: ...` line on stderr, optionally one
 * `hint: ...` line after it, no stack trace, no "Error:" and no "    at " lines. Returns the message.
 */
export function oneErrorLine(stderr: string): string {
  const lines = stderr.split('\n').filter((l) => l !== '');
  const msg = lines.filter((l) => l.startsWith('dmctl: '));
  if (msg.length !== 1) throw new Error(`expected exactly one "dmctl: " line on stderr, got ${msg.length}:\n${stderr}`);
  for (const l of lines) {
    if (/^\s+at /.test(l) || /\bError:/.test(l) || /^\s*at .*\(.*:\d+:\d+\)$/.test(l)) throw new Error(`stack trace or raw error on stderr:\n${stderr}`);
  }
  const other = lines.filter((l) => !l.startsWith('dmctl: ') && !l.startsWith('hint: '));
  if (other.length) throw new Error(`unexpected stderr lines besides the error and its hint:\n${other.join('\n')}`);
  if (lines[0] !== msg[0]) throw new Error(`the "dmctl: " line must come first:\n${stderr}`);
  const hints = lines.filter((l) => l.startsWith('hint: '));
  if (hints.length > 1) throw new Error(`more than one hint line:\n${stderr}`);
  return msg[0].slice('dmctl: '.length);
}
