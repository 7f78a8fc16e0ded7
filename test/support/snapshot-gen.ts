// Builds a restic repository holding a long, varied snapshot history with the real restic binary,
// for the forget parity test. The history is made once per seed and cached in os.tmpdir().
//
// Every snapshot is a `restic backup --force --time … --host … --tag …` of one tiny directory,
// run under TZ=<zone>: restic reads --time in its local zone, so TZ decides the stored offset.
// The history mixes: years 2019–2026, several hosts, path sets, tags and zones (incl. +05:30,
// +10:30/+11 half-hour DST, +12:45/+13:45, −03:30, +14, −11), nonexistent and ambiguous DST wall
// times, the same wall time in different zones, ISO week-53 years, month ends whose UTC date
// differs from the local one, bursts within hours and days, two snapshots in the future, and two
// pairs of snapshots at the same instant written with different offsets.

import { execFile, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { LocalBackend } from '../../src/storage/local.js';
import { addKey, findKey } from '../../src/repository/key-file.js';

const execFileP = promisify(execFile);

export const RESTIC = process.env.RESTIC_BIN ?? '/usr/bin/restic';
export const HISTORY_PASSWORD = 'forget-parity-password';

/** Bump when the generator changes, so stale caches are not reused. */
const GENERATOR_VERSION = 4;

export const ZONES = [
  'UTC', 'Europe/Berlin', 'America/New_York', 'Asia/Kolkata', 'Australia/Lord_Howe',
  'Pacific/Chatham', 'America/St_Johns', 'Pacific/Kiritimati', 'Pacific/Pago_Pago',
] as const;
export const HOSTS = ['alpha', 'beta', 'gamma'] as const;
export const TAG_POOL = ['daily', 'manual', 'db', 'web', 'keep'] as const;

export interface PlannedSnapshot {
  /** Wall time "YYYY-MM-DD HH:MM:SS" read in `zone`. */
  time: string;
  zone: string;
  host: string;
  /** Index into History.pathSets. */
  pathSet: number;
  tags: string[];
}

export interface History {
  dir: string;
  repo: string;
  password: string;
  /** The path sets used (absolute). */
  pathSets: string[][];
  /** `restic snapshots --json` output. */
  snapshots: Array<Record<string, unknown> & { id: string; time: string; paths: string[]; hostname?: string; tags?: string[] }>;
  /** Environment for running restic against the repository. */
  env: NodeJS.ProcessEnv;
  /** Seconds spent creating it (0 when it came from the cache). */
  buildSeconds: number;
  /** Whether the cheap key could be installed (restic calls then skip a 0.5 s KDF). */
  fastKey: boolean;
}

/** mulberry32: small, seedable, good enough for test data. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function pick<T>(r: () => number, list: readonly T[]): T {
  return list[Math.floor(r() * list.length)]!;
}

function p2(n: number): string {
  return String(n).padStart(2, '0');
}

function wall(d: Date): string {
  return `${d.getUTCFullYear()}-${p2(d.getUTCMonth() + 1)}-${p2(d.getUTCDate())} ${p2(d.getUTCHours())}:${p2(d.getUTCMinutes())}:${p2(d.getUTCSeconds())}`;
}

function randomTags(r: () => number): string[] {
  const n = r() < 0.3 ? 0 : r() < 0.7 ? 1 : 2;
  const out = new Set<string>();
  while (out.size < n) out.add(pick(r, TAG_POOL));
  return [...out];
}

/** Offset of `zone` at a UTC instant, in minutes, via ICU (only used to avoid accidental equal instants). */
function instantOf(wallTime: string, zone: string): number {
  // The wall time as if UTC, corrected by the zone offset found there (good enough to detect collisions;
  // collisions that differ by a DST hour are harmless either way).
  const asUtc = Date.parse(wallTime.replace(' ', 'T') + 'Z');
  const fmt = new Intl.DateTimeFormat('en-US', { timeZone: zone, timeZoneName: 'longOffset' });
  const name = fmt.formatToParts(new Date(asUtc)).find((p) => p.type === 'timeZoneName')?.value ?? 'GMT';
  const m = /GMT([+-])(\d{2}):(\d{2})/.exec(name);
  const off = m ? (Number(m[2]) * 60 + Number(m[3])) * (m[1] === '-' ? -1 : 1) : 0;
  return asUtc - off * 60000;
}

/** The deterministic plan of snapshots for a seed (about `count` entries plus the fixed edge cases). */
export function planHistory(seed: number, count = 240): PlannedSnapshot[] {
  const r = rng(seed);
  const plan: PlannedSnapshot[] = [];
  const seen = new Set<number>();
  const add = (p: PlannedSnapshot, allowSameInstant = false): void => {
    const t = instantOf(p.time, p.zone);
    if (!allowSameInstant && seen.has(t)) return;
    seen.add(t);
    plan.push(p);
  };
  const h = (i: number): string => HOSTS[i]!;

  // Fixed edge cases.
  const fixed: Array<[string, string, string, number, string[]]> = [
    // nonexistent and ambiguous local times around DST switches
    ['2021-03-28 02:30:00', 'Europe/Berlin', h(0), 0, ['daily']],
    ['2021-10-31 02:30:00', 'Europe/Berlin', h(0), 0, ['daily']],
    ['2022-03-13 02:30:00', 'America/New_York', h(1), 0, []],
    ['2022-11-06 01:30:00', 'America/New_York', h(1), 0, []],
    ['2022-04-03 02:30:00', 'Australia/Lord_Howe', h(2), 1, ['db']],
    ['2022-09-25 06:00:00', 'Pacific/Chatham', h(2), 1, ['db']],
    // the same wall time in different zones
    ['2023-06-15 12:00:00', 'UTC', h(0), 0, ['web']],
    ['2023-06-15 12:00:00', 'Europe/Berlin', h(0), 0, ['web']],
    ['2023-06-15 12:00:00', 'America/New_York', h(0), 0, ['web']],
    ['2023-06-15 12:00:00', 'Asia/Kolkata', h(0), 0, ['web']],
    ['2023-06-15 12:00:00', 'Pacific/Kiritimati', h(0), 0, ['web']],
    // ISO week edges: 2020 and 2026 have 53 weeks; 2019-12-30 is 2020-W01; 2024-12-30 is 2025-W01
    ['2020-12-31 23:30:00', 'UTC', h(1), 2, ['keep']],
    ['2021-01-01 00:30:00', 'Europe/Berlin', h(1), 2, ['keep']],
    ['2021-01-03 22:00:00', 'America/New_York', h(1), 2, []],
    ['2021-01-04 00:10:00', 'Asia/Kolkata', h(1), 2, []],
    ['2019-12-30 08:00:00', 'UTC', h(1), 2, []],
    ['2019-12-29 20:00:00', 'UTC', h(1), 2, []],
    ['2024-12-30 09:00:00', 'America/St_Johns', h(2), 0, []],
    ['2026-12-31 10:00:00', 'UTC', h(2), 0, []],
    ['2027-01-03 10:00:00', 'UTC', h(2), 0, []],
    // month ends where the UTC date is another day
    ['2024-03-31 23:30:00', 'America/New_York', h(0), 1, ['db', 'daily']],
    ['2024-02-29 00:30:00', 'Pacific/Kiritimati', h(0), 1, ['db']],
    ['2024-01-31 23:59:59', 'Pacific/Pago_Pago', h(0), 1, []],
    ['2023-02-28 23:00:00', 'Asia/Kolkata', h(0), 1, []],
    ['2025-05-31 23:45:00', 'Pacific/Chatham', h(2), 1, ['manual']],
    // future snapshots (never "latest")
    ['2031-05-01 10:00:00', 'UTC', h(1), 0, ['manual']],
    ['2032-01-01 00:00:00', 'Europe/Berlin', h(0), 1, []],
  ];
  for (const [time, zone, host, pathSet, tags] of fixed) add({ time, zone, host, pathSet, tags });

  // Keep-within across a DST switch, measured from a latest snapshot in the local zone (the DST test:
  // 7 days before 2021-04-02 12:00 Berlin is 11:00Z in Berlin time but 10:00Z at a fixed +02:00).
  add({ time: '2021-04-02 12:00:00', zone: 'Europe/Berlin', host: 'dst', pathSet: 0, tags: [] });
  add({ time: '2021-03-26 11:30:00', zone: 'Europe/Berlin', host: 'dst', pathSet: 0, tags: [] });
  add({ time: '2021-03-26 12:30:00', zone: 'Europe/Berlin', host: 'dst', pathSet: 0, tags: [] });
  add({ time: '2021-03-20 09:00:00', zone: 'Europe/Berlin', host: 'dst', pathSet: 0, tags: [] });
  // New York: 1 month before 2022-03-20 12:00 EDT crosses the March 13 switch.
  add({ time: '2022-03-20 12:00:00', zone: 'America/New_York', host: 'dst', pathSet: 1, tags: [] });
  add({ time: '2022-02-20 11:30:00', zone: 'America/New_York', host: 'dst', pathSet: 1, tags: [] });
  add({ time: '2022-02-20 12:30:00', zone: 'America/New_York', host: 'dst', pathSet: 1, tags: [] });

  // Exact keep-within boundaries (host "edge"): latest 2023-08-31 12:00Z; 7d and 1m before it exactly,
  // and one second after each. Path set 1: latest 2023-03-31 10:00Z, where "1m" goes back to
  // Feb 31 = Mar 3 (Go normalises, it does not clamp to Feb 28), so Mar 2 is outside.
  for (const t of ['2023-08-31 12:00:00', '2023-08-24 12:00:00', '2023-08-24 12:00:01', '2023-07-31 12:00:00', '2023-07-31 12:00:01']) {
    add({ time: t, zone: 'UTC', host: 'edge', pathSet: 0, tags: [] });
  }
  for (const t of ['2023-03-31 10:00:00', '2023-03-03 10:00:00', '2023-03-03 10:00:01', '2023-03-02 12:00:00', '2023-02-28 10:00:00']) {
    add({ time: t, zone: 'UTC', host: 'edge', pathSet: 1, tags: [] });
  }

  // Same instant, two offsets, same host and paths (restic's order between them is arbitrary).
  add({ time: '2022-07-01 10:00:00', zone: 'UTC', host: h(2), pathSet: 2, tags: ['web'] }, true);
  add({ time: '2022-07-01 12:00:00', zone: 'Europe/Berlin', host: h(2), pathSet: 2, tags: ['web'] }, true);
  add({ time: '2025-01-15 23:30:00', zone: 'America/New_York', host: h(1), pathSet: 0, tags: [] }, true);
  add({ time: '2025-01-16 10:00:00', zone: 'Asia/Kolkata', host: h(1), pathSet: 0, tags: [] }, true);

  const start = Date.UTC(2019, 0, 1);
  const end = Date.UTC(2026, 5, 30);
  const want = plan.length + count;
  let guard = 0;
  while (plan.length < want && guard++ < count * 10) {
    const zone = pick(r, ZONES);
    const host = pick(r, HOSTS);
    const pathSet = r() < 0.6 ? 0 : r() < 0.6 ? 1 : 2;
    const tags = randomTags(r);
    const kind = r();
    if (kind < 0.4) {
      // anywhere in the years
      add({ time: wall(new Date(start + Math.floor(r() * (end - start) / 1000) * 1000)), zone, host, pathSet, tags });
    } else if (kind < 0.75) {
      // the last few months, dense
      add({ time: wall(new Date(end - Math.floor(r() * 100 * 86400) * 1000)), zone, host, pathSet, tags });
    } else {
      // a burst: a few snapshots within hours of one another
      const base = start + Math.floor(r() * (end - start) / 1000) * 1000;
      const n = 2 + Math.floor(r() * 4);
      for (let i = 0; i < n; i++) {
        add({ time: wall(new Date(base + Math.floor(r() * 30 * 3600) * 1000)), zone: r() < 0.7 ? zone : pick(r, ZONES), host, pathSet, tags: r() < 0.8 ? tags : randomTags(r) });
      }
    }
  }
  return plan;
}

async function restic(args: string[], env: NodeJS.ProcessEnv): Promise<string> {
  const { stdout } = await execFileP(RESTIC, args, { env, maxBuffer: 256 * 1024 * 1024 });
  return stdout;
}

/**
 * Replace the repository's calibrated key (scrypt ~0.5 s per restic call) by one with cheap
 * parameters. Test repositories only. Returns false (and leaves the repository as it was) on failure.
 */
async function installFastKey(repo: string, password: string): Promise<boolean> {
  const be = new LocalBackend(repo);
  try {
    const { master, keyId } = await findKey(be, password);
    await addKey(be, master, password, { params: { N: 1024, r: 8, p: 1 } });
    await be.remove('keys', keyId);
    return true;
  } catch {
    return false;
  } finally {
    await be.close();
  }
}

/** Create (or reuse from the cache) the history for `seed`. */
export async function makeHistory(seed: number, count = 240, parallel = 2): Promise<History> {
  const dir = path.join(os.tmpdir(), `dmctl-forget-history-v${GENERATOR_VERSION}-${seed}-${count}`);
  const repo = path.join(dir, 'repo');
  const pathSets = [[path.join(dir, 'src', 'a')], [path.join(dir, 'src', 'b')], [path.join(dir, 'src', 'a'), path.join(dir, 'src', 'b')]];
  const env: NodeJS.ProcessEnv = { ...process.env, RESTIC_PASSWORD: HISTORY_PASSWORD, RESTIC_REPOSITORY: repo, RESTIC_CACHE_DIR: path.join(dir, 'cache') };
  delete env.RESTIC_PASSWORD_FILE;
  delete env.RESTIC_PASSWORD_COMMAND;
  const done = path.join(dir, 'snapshots.json');
  if (fs.existsSync(done)) {
    const snapshots = JSON.parse(fs.readFileSync(done, 'utf8')) as History['snapshots'];
    const fastKey = fs.existsSync(path.join(dir, 'fast-key'));
    return { dir, repo, password: HISTORY_PASSWORD, pathSets, snapshots, env, buildSeconds: 0, fastKey };
  }
  const t0 = process.hrtime.bigint();
  fs.rmSync(dir, { recursive: true, force: true });
  for (const p of ['a', 'b']) {
    fs.mkdirSync(path.join(dir, 'src', p), { recursive: true });
    fs.writeFileSync(path.join(dir, 'src', p, 'file.txt'), `tiny file ${p}\n`);
  }
  await restic(['init', '-q'], env);
  const fastKey = await installFastKey(repo, HISTORY_PASSWORD);
  if (fastKey) fs.writeFileSync(path.join(dir, 'fast-key'), '');
  // One real backup first: it has a time with nanoseconds and the machine's offset.
  await restic(['backup', '-q', '--host', 'init', ...pathSets[2]!], env);

  const plan = planHistory(seed, count);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < plan.length) {
      const p = plan[next++]!;
      const args = ['backup', '-q', '--force', '--time', p.time, '--host', p.host];
      for (const t of p.tags) args.push('--tag', t);
      args.push(...pathSets[p.pathSet]!);
      await restic(args, { ...env, TZ: p.zone });
    }
  };
  await Promise.all(Array.from({ length: parallel }, worker));
  const out = await restic(['snapshots', '--json'], env);
  const snapshots = JSON.parse(out) as History['snapshots'];
  fs.writeFileSync(done, JSON.stringify(snapshots));
  const buildSeconds = Number(process.hrtime.bigint() - t0) / 1e9;
  return { dir, repo, password: HISTORY_PASSWORD, pathSets, snapshots, env, buildSeconds, fastKey };
}

/** restic's version line, to label diagnostics. */
export function resticVersion(): string {
  return execFileSync(RESTIC, ['version'], { encoding: 'utf8' }).trim();
}
