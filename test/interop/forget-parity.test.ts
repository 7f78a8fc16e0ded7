// Parity: forgetPlan() must decide exactly what `restic forget --dry-run --json` (0.14) decides —
// same groups, same keep/remove IDs in the same order, same reasons and counters, same JSON —
// for many random policies over a generated history (see test/support/snapshot-gen.ts).
//
// Seeds: FORGET_PARITY_SEED fixes the random part (default: a fixed seed plus a per-run random one,
// both printed). Reproduce a failure with FORGET_PARITY_SEED=<seed> node --test dist/test/interop/forget-parity.test.js.

import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  type ForgetGroupJson, type ForgetPolicy, type PolicySnapshot, type SnapshotFilter, forgetPlan,
} from '../../src/maintenance/forget-policy.js';
import { HOSTS, RESTIC, TAG_POOL, type History, makeHistory, pick, rng } from '../support/snapshot-gen.js';

const execFileP = promisify(execFile);

const HISTORY_SEED = 4242;
const HISTORY_COUNT = 210;
const FIXED_POLICY_SEED = 20240601;
const FIXED_POLICIES = 60;
const RANDOM_POLICIES = 20;
const RUN_ZONES = ['UTC', 'Europe/Berlin', 'America/New_York'] as const;

interface Case {
  label: string;
  policy: ForgetPolicy;
  filter: SnapshotFilter;
  groupBy: string | undefined; // undefined: restic's default (flag not given)
  zone: string;
}

function randomDuration(r: () => number): string {
  const units: Array<[string, number]> = [['y', 3], ['m', 15], ['d', 45], ['h', 80]];
  let s = '';
  for (const [u, max] of units) {
    if (r() < 0.4) s += `${Math.floor(r() * max)}${u}`;
  }
  return s === '' ? `${1 + Math.floor(r() * 30)}d` : s;
}

function randomCount(r: () => number): number {
  const x = r();
  if (x < 0.04) return -1; // 0.14: a negative count is a rule that keeps nothing
  if (x < 0.6) return 1 + Math.floor(r() * 4);
  return 1 + Math.floor(r() * 15);
}

function randomTagList(r: () => number): string[] {
  if (r() < 0.1) return [''];
  const n = r() < 0.7 ? 1 : 2;
  const s = new Set<string>();
  while (s.size < n) s.add(pick(r, TAG_POOL));
  return [...s];
}

function randomCase(r: () => number, h: History, label: string): Case {
  const policy: ForgetPolicy = {};
  for (;;) {
    for (const k of ['last', 'hourly', 'daily', 'weekly', 'monthly', 'yearly'] as const) {
      if (r() < 0.3) policy[k] = randomCount(r);
    }
    if (r() < 0.25) policy.within = randomDuration(r);
    for (const k of ['withinHourly', 'withinDaily', 'withinWeekly', 'withinMonthly', 'withinYearly'] as const) {
      if (r() < 0.12) policy[k] = randomDuration(r);
    }
    if (r() < 0.2) policy.tags = Array.from({ length: r() < 0.7 ? 1 : 2 }, () => randomTagList(r));
    if (Object.keys(policy).length > 0) break;
  }
  const filter: SnapshotFilter = {};
  if (r() < 0.25) filter.hosts = r() < 0.6 ? [pick(r, HOSTS)] : [pick(r, HOSTS), pick(r, [...HOSTS, 'dst', 'init'])];
  if (r() < 0.15) filter.tags = [randomTagList(r)];
  if (r() < 0.15) filter.paths = [pick(r, h.pathSets[2]!)];
  const groupBy = pick(r, [undefined, undefined, 'host', 'paths', 'tags', 'host,tags', '', 'host,paths,tags', 'hosts,path'] as const);
  return { label, policy, filter, groupBy, zone: pick(r, RUN_ZONES) };
}

function resticArgs(c: Case): string[] {
  const a = ['forget', '--dry-run', '--json', '--no-cache'];
  const p = c.policy;
  const counts: Array<[keyof ForgetPolicy, string]> = [
    ['last', '--keep-last'], ['hourly', '--keep-hourly'], ['daily', '--keep-daily'],
    ['weekly', '--keep-weekly'], ['monthly', '--keep-monthly'], ['yearly', '--keep-yearly'],
    ['within', '--keep-within'], ['withinHourly', '--keep-within-hourly'], ['withinDaily', '--keep-within-daily'],
    ['withinWeekly', '--keep-within-weekly'], ['withinMonthly', '--keep-within-monthly'], ['withinYearly', '--keep-within-yearly'],
  ];
  for (const [k, flag] of counts) if (p[k] !== undefined) a.push(`${flag}=${String(p[k])}`);
  for (const l of p.tags ?? []) a.push(`--keep-tag=${l.join(',')}`);
  for (const host of c.filter.hosts ?? []) a.push(`--host=${host}`);
  for (const l of c.filter.tags ?? []) a.push(`--tag=${l.join(',')}`);
  for (const path of c.filter.paths ?? []) a.push(`--path=${path}`);
  if (c.groupBy !== undefined) a.push(`--group-by=${c.groupBy}`);
  return a;
}

async function runRestic(h: History, c: Case): Promise<ForgetGroupJson[]> {
  const { stdout } = await execFileP(RESTIC, resticArgs(c), { env: { ...h.env, TZ: c.zone }, maxBuffer: 64 * 1024 * 1024 });
  const text = stdout.trim();
  return text === '' ? [] : (JSON.parse(text) as ForgetGroupJson[]);
}

function groupKey(g: ForgetGroupJson): string {
  return JSON.stringify([g.host, g.paths, g.tags]);
}

function sortGroups(gs: ForgetGroupJson[]): ForgetGroupJson[] {
  return [...gs].sort((a, b) => (groupKey(a) < groupKey(b) ? -1 : groupKey(a) > groupKey(b) ? 1 : 0));
}

/** Exact instant of an RFC3339Nano string, as a sortable key. */
function instantKey(t: string): string {
  const m = /\.(\d+)/.exec(t);
  return `${Date.parse(t.replace(/\.\d+/, ''))}.${(m?.[1] ?? '').padEnd(9, '0')}`;
}

/**
 * restic feeds each group to a stable sort in the order its parallel loader produced, so the order
 * between snapshots at the very same instant is arbitrary. Return the input orders to try: every
 * combination of orders within each set of equal instants.
 */
function tieOrders(snaps: PolicySnapshot[]): PolicySnapshot[][] {
  const byInstant = new Map<string, PolicySnapshot[]>();
  for (const s of snaps) {
    const k = instantKey(s.time);
    byInstant.set(k, [...(byInstant.get(k) ?? []), s]);
  }
  const ties = [...byInstant.values()].filter((l) => l.length > 1);
  let orders: PolicySnapshot[][] = [snaps];
  for (const tie of ties) {
    assert.ok(tie.length === 2, 'the generator only makes pairs of equal instants');
    orders = orders.flatMap((o) => {
      const swapped = o.map((s) => (s === tie[0] ? tie[1]! : s === tie[1] ? tie[0]! : s));
      return [o, swapped];
    });
  }
  return orders;
}

function describeCase(c: Case, seed: number): string {
  return `seed=${seed} ${c.label}: TZ=${c.zone} restic ${resticArgs(c).join(' ')}`;
}

describe('forget parity with restic 0.14 (forget --dry-run --json)', { timeout: 240_000 }, () => {
  let h: History;
  const runSeed = process.env.FORGET_PARITY_SEED !== undefined ? Number(process.env.FORGET_PARITY_SEED) : undefined;
  const randomSeed = runSeed ?? (Date.now() % 1_000_000_007);
  const stats = { cases: 0, groups: 0, keep: 0, remove: 0, reasons: 0, tieVariantsUsed: 0, resticMs: 0, oursMs: 0 };
  const t0 = Date.now();

  before(async () => {
    h = await makeHistory(HISTORY_SEED, HISTORY_COUNT);
  });

  after(() => {
    process.stderr.write(
      `# forget parity: history ${h?.snapshots.length} snapshots (built in ${h?.buildSeconds.toFixed(1)} s, fast key ${h?.fastKey}); ` +
      `${stats.cases} policies, ${stats.groups} groups, ${stats.keep} keep + ${stats.remove} remove decisions, ${stats.reasons} reasons matched; ` +
      `tie-order variants needed: ${stats.tieVariantsUsed}; restic ${stats.resticMs} ms, ours ${stats.oursMs} ms; total ${((Date.now() - t0) / 1000).toFixed(1)} s; ` +
      `random seed ${randomSeed}\n`);
  });

  async function check(c: Case, seed: number): Promise<void> {
    const r0 = Date.now();
    const theirs = sortGroups(await runRestic(h, c));
    stats.resticMs += Date.now() - r0;
    const snaps = h.snapshots as unknown as PolicySnapshot[];
    const o0 = Date.now();
    let ours: ForgetGroupJson[] = [];
    let matched = false;
    const orders = tieOrders(snaps);
    for (let i = 0; i < orders.length && !matched; i++) {
      ours = sortGroups(forgetPlan(orders[i]!, c.policy, c.filter, c.groupBy ?? 'host,paths', { timeZone: c.zone }));
      matched = JSON.stringify(ours) === JSON.stringify(theirs);
      if (matched && i > 0) stats.tieVariantsUsed++;
    }
    stats.oursMs += Date.now() - o0;
    if (!matched) {
      // Show the first difference in detail (deepEqual's diff), with the seed and the command.
      assert.deepEqual(ours, theirs, describeCase(c, seed));
      assert.equal(JSON.stringify(ours), JSON.stringify(theirs), `${describeCase(c, seed)} (key order or formatting differs)`);
    }
    stats.cases++;
    stats.groups += theirs.length;
    for (const g of theirs) {
      stats.keep += g.keep?.length ?? 0;
      stats.remove += g.remove?.length ?? 0;
      stats.reasons += g.reasons?.length ?? 0;
    }
  }

  it('the generated history has what the test needs', () => {
    const snaps = h.snapshots;
    assert.ok(snaps.length >= 240, `history has ${snaps.length} snapshots`);
    const offsets = new Set(snaps.map((s) => /(Z|[+-]\d\d:\d\d)$/.exec(s.time)?.[1]));
    assert.ok(offsets.size >= 10, `only ${offsets.size} distinct offsets`);
    const years = new Set(snaps.map((s) => s.time.slice(0, 4)));
    assert.ok(years.size >= 7, `only ${years.size} distinct years`);
    assert.ok(snaps.some((s) => s.time.startsWith('2021-03-28T03:30:00+02:00')), 'nonexistent Berlin wall time normalised by restic');
    assert.ok(snaps.some((s) => Date.parse(s.time) > Date.now()), 'future snapshots present');
    assert.ok(snaps.some((s) => /\.\d+/.test(s.time)), 'a snapshot with fractional seconds');
  });

  it(`${FIXED_POLICIES} random policies from seed ${FIXED_POLICY_SEED}`, async () => {
    const r = rng(FIXED_POLICY_SEED);
    for (let i = 0; i < FIXED_POLICIES; i++) await check(randomCase(r, h, `fixed #${i}`), FIXED_POLICY_SEED);
  });

  it(`${RANDOM_POLICIES} random policies from a per-run seed`, async () => {
    const r = rng(randomSeed);
    for (let i = 0; i < RANDOM_POLICIES; i++) await check(randomCase(r, h, `run #${i}`), randomSeed);
  });

  it('keep-within across DST: the local zone decides AddDate for the latest snapshot', async () => {
    // Host "dst": latest 2021-04-02 12:00+02:00. 7 days earlier is 11:00Z under TZ=Europe/Berlin (a
    // +01:00 wall time then) but 10:00Z under TZ=UTC, so the 2021-03-26 11:30+01:00 snapshot (10:30Z)
    // is kept only under UTC. Both must match restic, and they must differ from each other.
    const base = { policy: { within: '7d' }, filter: { hosts: ['dst'], paths: [h.pathSets[0]![0]!] }, groupBy: undefined };
    const utc: Case = { ...base, label: 'dst/UTC', zone: 'UTC' };
    const berlin: Case = { ...base, label: 'dst/Berlin', zone: 'Europe/Berlin' };
    await check(utc, 0);
    await check(berlin, 0);
    const snaps = h.snapshots as unknown as PolicySnapshot[];
    const keptUtc = forgetPlan(snaps, utc.policy, utc.filter, 'host,paths', { timeZone: 'UTC' })[0]!.keep!.map((s) => s.time);
    const keptBerlin = forgetPlan(snaps, berlin.policy, berlin.filter, 'host,paths', { timeZone: 'Europe/Berlin' })[0]!.keep!.map((s) => s.time);
    assert.deepEqual(keptUtc, ['2021-04-02T12:00:00+02:00', '2021-03-26T12:30:00+01:00', '2021-03-26T11:30:00+01:00']);
    assert.deepEqual(keptBerlin, ['2021-04-02T12:00:00+02:00', '2021-03-26T12:30:00+01:00']);
    // The same across New York's March switch with a month and with within-hourly buckets.
    for (const zone of ['UTC', 'America/New_York']) {
      await check({ label: `dst-ny/${zone}`, zone, policy: { within: '1m', withinHourly: '1m' }, filter: { hosts: ['dst'], paths: [h.pathSets[1]![0]!] }, groupBy: undefined }, 0);
    }
  });

  it('keep-within boundaries are strictly after, and months normalise like Go AddDate', async () => {
    const snaps = h.snapshots as unknown as PolicySnapshot[];
    const kept = (policy: ForgetPolicy, ps: number): string[] =>
      forgetPlan(snaps, policy, { hosts: ['edge'], paths: [h.pathSets[ps]![0]!] }, 'host,paths', { timeZone: 'UTC' })
        .flatMap((g) => g.keep ?? []).map((s) => s.time);
    const cases: Array<[ForgetPolicy, number, string[]]> = [
      [{ within: '7d' }, 0, ['2023-08-31T12:00:00Z', '2023-08-24T12:00:01Z']],
      [{ within: '1m' }, 0, ['2023-08-31T12:00:00Z', '2023-08-24T12:00:01Z', '2023-08-24T12:00:00Z', '2023-07-31T12:00:01Z']],
      [{ within: '168h' }, 0, ['2023-08-31T12:00:00Z', '2023-08-24T12:00:01Z']],
      [{ within: '1m' }, 1, ['2023-03-31T10:00:00Z', '2023-03-03T10:00:01Z']],
      [{ withinDaily: '1m' }, 1, ['2023-03-31T10:00:00Z', '2023-03-03T10:00:01Z']],
    ];
    for (const [policy, ps, expected] of cases) {
      // Hand-computed expectation first, then the same decision from restic.
      assert.deepEqual(kept(policy, ps), expected, JSON.stringify(policy));
      await check({ label: `edge ${JSON.stringify(policy)}`, policy, filter: { hosts: ['edge'], paths: [h.pathSets[ps]![0]!] }, groupBy: undefined, zone: 'UTC' }, 0);
    }
  });

  it('every flag alone, each group-by, and an empty policy', async () => {
    const cases: Case[] = [];
    const one = (label: string, policy: ForgetPolicy, groupBy?: string, filter: SnapshotFilter = {}): void => {
      cases.push({ label, policy, filter, groupBy, zone: 'UTC' });
    };
    one('last', { last: 5 });
    one('hourly', { hourly: 30 });
    one('daily', { daily: 30 });
    one('weekly', { weekly: 60 }, '');
    one('monthly', { monthly: 40 }, 'tags');
    one('yearly', { yearly: 10 }, 'host');
    one('within', { within: '1y5m7d2h' });
    one('within-hourly', { withinHourly: '3d' }, 'paths');
    one('within-daily', { withinDaily: '2m' });
    one('within-weekly', { withinWeekly: '1y' }, '');
    one('within-monthly', { withinMonthly: '3y' }, 'host,paths,tags');
    one('within-yearly', { withinYearly: '10y' });
    one('keep-tag', { tags: [['db', 'daily'], ['keep']] });
    one('keep-tag empty', { tags: [['']] }, 'tags');
    one('negative count', { last: -1 });
    one('all buckets', { last: 3, hourly: 5, daily: 7, weekly: 5, monthly: 12, yearly: 5 }, '');
    one('filters', { daily: 3 }, 'host', { hosts: ['alpha', 'gamma'], tags: [['db'], ['web']] });
    for (const c of cases) await check(c, 0);
    // Empty policy: restic prints nothing at all, forgetPlan returns [].
    const empty: Case = { label: 'empty', policy: { within: '0d' }, filter: {}, groupBy: undefined, zone: 'UTC' };
    const { stdout } = await execFileP(RESTIC, resticArgs(empty), { env: h.env });
    assert.equal(stdout.trim(), '');
    assert.deepEqual(forgetPlan(h.snapshots as unknown as PolicySnapshot[], empty.policy, {}, 'host,paths'), []);
  });
});
