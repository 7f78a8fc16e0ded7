// Hand-computed expectations for the restic 0.14 forget policy (reference §13).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { IntegrityError, UsageError } from '../../src/core/errors.js';
import { formatDuration, isZeroDuration, parseDuration } from '../../src/maintenance/duration.js';
import {
  type PolicySnapshot, applyPolicy, filterSnapshots, forgetPlan, groupSnapshots, isEmptyPolicy, parseGroupBy, parseTagList,
} from '../../src/maintenance/forget-policy.js';

let counter = 0;
function snap(time: string, extra: Partial<PolicySnapshot> = {}): PolicySnapshot {
  counter++;
  const id = counter.toString(16).padStart(2, '0').repeat(32);
  return { id, time, hostname: 'h', paths: ['/data'], tree: 'ab'.repeat(32), ...extra };
}

const NOW = new Date('2025-06-01T00:00:00Z');
const times = (l: PolicySnapshot[]): string[] => l.map((s) => s.time);

describe('parseDuration / formatDuration', () => {
  it('parses restic durations', () => {
    assert.deepEqual(parseDuration('1y5m7d2h'), { years: 1, months: 5, days: 7, hours: 2 });
    assert.deepEqual(parseDuration('  36h '), { years: 0, months: 0, days: 0, hours: 36 });
    assert.deepEqual(parseDuration('1d2d'), { years: 0, months: 0, days: 2, hours: 0 }, 'a later unit replaces an earlier one');
    assert.deepEqual(parseDuration('-1d'), { years: 0, months: 0, days: -1, hours: 0 });
    assert.ok(isZeroDuration(parseDuration('')));
    assert.ok(isZeroDuration(parseDuration('0y0d')));
  });
  it('rejects malformed durations with a UsageError', () => {
    for (const bad of ['d', '5', '5x', '1 d', '--1d', '1.5d', '1d 2h', '99999999999d', '٣d']) {
      assert.throws(() => parseDuration(bad), UsageError, bad);
    }
  });
  it('formats like restic', () => {
    assert.equal(formatDuration(parseDuration('0y2m0d5h')), '2m5h');
    assert.equal(formatDuration(parseDuration('1y5m7d2h')), '1y5m7d2h');
    assert.equal(formatDuration(parseDuration('-3d')), '-3d');
  });
});

describe('parseGroupBy / parseTagList', () => {
  it('accepts restic tokens', () => {
    assert.deepEqual(parseGroupBy('host,paths'), { host: true, paths: true, tags: false });
    assert.deepEqual(parseGroupBy('hosts,tag'), { host: true, paths: false, tags: true });
    assert.deepEqual(parseGroupBy(''), { host: false, paths: false, tags: false });
    assert.deepEqual(parseGroupBy('path,,tags'), { host: false, paths: true, tags: true });
  });
  it('rejects unknown tokens (no trimming, like restic)', () => {
    assert.throws(() => parseGroupBy('host, paths'), UsageError);
    assert.throws(() => parseGroupBy('hostname'), UsageError);
  });
  it('splits tag lists and trims each tag', () => {
    assert.deepEqual(parseTagList(' a , b'), ['a', 'b']);
    assert.deepEqual(parseTagList(''), ['']);
  });
});

describe('buckets', () => {
  it('ISO weeks: 2020 has a week 53 that runs to Sunday 2021-01-03; 2019-12-30 is 2020-W01', () => {
    const g = [
      snap('2021-01-04T12:00:00Z'), // 2021-W01
      snap('2021-01-03T12:00:00Z'), // 2020-W53
      snap('2020-12-31T12:00:00Z'), // 2020-W53
      snap('2020-12-27T12:00:00Z'), // 2020-W52 (Sunday)
      snap('2019-12-30T12:00:00Z'), // 2020-W01
      snap('2019-12-29T12:00:00Z'), // 2019-W52
    ];
    const r = applyPolicy(g, { weekly: 10 }, NOW);
    assert.deepEqual(times(r.keep), ['2021-01-04T12:00:00Z', '2021-01-03T12:00:00Z', '2020-12-27T12:00:00Z', '2019-12-30T12:00:00Z', '2019-12-29T12:00:00Z']);
    assert.deepEqual(times(r.remove), ['2020-12-31T12:00:00Z']);
    assert.deepEqual(r.reasons[0]!.counters, { weekly: 9 });
  });
  it('2026 has 53 weeks: 2026-12-31 and 2027-01-03 share a week, 2027-01-04 does not', () => {
    const g = [snap('2027-01-04T01:00:00Z'), snap('2027-01-03T23:00:00Z'), snap('2026-12-31T10:00:00Z')];
    const r = applyPolicy(g, { weekly: 5 }, new Date('2028-01-01T00:00:00Z'));
    assert.deepEqual(times(r.remove), ['2026-12-31T10:00:00Z']);
  });
  it('calendar fields come from each snapshot’s own offset', () => {
    // 2024-03-31 23:30 in New York is 2024-04-01 03:30 UTC, but it belongs to March.
    const g = [snap('2024-03-31T23:30:00-04:00'), snap('2024-03-31T10:00:00Z'), snap('2024-02-29T23:00:00+14:00')];
    const r = applyPolicy(g, { monthly: 5 }, NOW);
    assert.deepEqual(times(r.keep), ['2024-03-31T23:30:00-04:00', '2024-02-29T23:00:00+14:00']);
    // Hourly: 23:30-04:00 and 10:00Z are different hours; daily: same local date 2024-03-31.
    const d = applyPolicy(g, { daily: 5 }, NOW);
    assert.deepEqual(times(d.remove), ['2024-03-31T10:00:00Z']);
  });
  it('every bucket fires for the same snapshot and counters count down', () => {
    const g = [snap('2024-05-01T10:00:00Z'), snap('2024-05-01T09:00:00Z'), snap('2023-01-01T00:00:00Z')];
    const r = applyPolicy(g, { last: 1, hourly: 2, daily: 2, weekly: 2, monthly: 2, yearly: 2 }, NOW);
    assert.deepEqual(r.reasons[0]!.matches, ['last snapshot', 'hourly snapshot', 'daily snapshot', 'weekly snapshot', 'monthly snapshot', 'yearly snapshot']);
    assert.deepEqual(r.reasons[0]!.counters, { hourly: 1, daily: 1, weekly: 1, monthly: 1, yearly: 1 });
    assert.deepEqual(r.reasons[1]!.matches, ['hourly snapshot']);
    assert.deepEqual(r.reasons[1]!.counters, { daily: 1, weekly: 1, monthly: 1, yearly: 1 });
    assert.deepEqual(r.reasons[2]!.matches, ['daily snapshot', 'weekly snapshot', 'monthly snapshot', 'yearly snapshot']);
    assert.deepEqual(r.reasons[2]!.counters, {});
  });
  it('keep-tag keeps without consuming counters', () => {
    const g = [snap('2024-05-03T00:00:00Z', { tags: ['a'] }), snap('2024-05-02T00:00:00Z', { tags: ['a', 'b'] }), snap('2024-05-01T00:00:00Z')];
    const r = applyPolicy(g, { tags: [['b', 'a']], daily: 2 }, NOW);
    assert.deepEqual(r.reasons.map((x) => x.matches), [['daily snapshot'], ['has tags [b, a]', 'daily snapshot']]);
    assert.deepEqual(times(r.remove), ['2024-05-01T00:00:00Z']);
    // An empty tag matches untagged snapshots only.
    const e = applyPolicy(g, { tags: [['']] }, NOW);
    assert.deepEqual(times(e.keep), ['2024-05-01T00:00:00Z']);
    assert.deepEqual(e.reasons[0]!.matches, ['has tags []']);
  });
  it('a negative count is a rule that keeps nothing (0.14)', () => {
    const g = [snap('2024-05-03T00:00:00Z'), snap('2024-05-02T00:00:00Z')];
    assert.equal(isEmptyPolicy({ last: -1 }), false);
    const r = applyPolicy(g, { last: -1 }, NOW);
    assert.equal(r.keep.length, 0);
    assert.equal(r.remove.length, 2);
  });
  it('an empty policy keeps everything', () => {
    assert.ok(isEmptyPolicy({}));
    assert.ok(isEmptyPolicy({ within: '0d', last: 0 }));
    assert.equal(isEmptyPolicy({ tags: [['']] }), false);
    const r = applyPolicy([snap('2024-05-01T00:00:00Z')], {}, NOW);
    assert.deepEqual(r.reasons[0]!.matches, ['policy is empty']);
  });
  it('sorts newest first, stable for equal instants (same instant, different offsets)', () => {
    const a = snap('2022-07-01T12:00:00+02:00');
    const b = snap('2022-07-01T10:00:00Z');
    const c = snap('2022-07-01T11:00:00Z');
    assert.deepEqual(applyPolicy([a, b, c], { last: 10 }, NOW).keep, [c, a, b]);
    assert.deepEqual(applyPolicy([b, a, c], { last: 10 }, NOW).keep, [c, b, a]);
    // Nanoseconds order too.
    const n1 = snap('2022-07-01T10:00:00.000000002Z');
    const n2 = snap('2022-07-01T10:00:00.000000001Z');
    assert.deepEqual(applyPolicy([n2, n1], { last: 1 }, NOW).keep, [n1]);
  });
});

describe('keep-within', () => {
  it('Mar 31 − 1m is Mar 3 (Go AddDate normalises Feb 31), strictly after', () => {
    const g = [snap('2023-03-31T10:00:00Z'), snap('2023-03-03T10:00:01Z'), snap('2023-03-03T10:00:00Z'), snap('2023-03-02T12:00:00Z')];
    const r = applyPolicy(g, { within: '1m' }, NOW);
    assert.deepEqual(times(r.keep), ['2023-03-31T10:00:00Z', '2023-03-03T10:00:01Z']);
    assert.deepEqual(r.reasons[0]!.matches, ['within 1m']);
    // In a leap year Feb 31 is Mar 2.
    const l = applyPolicy([snap('2024-03-31T10:00:00Z'), snap('2024-03-02T10:00:01Z'), snap('2024-03-02T10:00:00Z')], { within: '1m' }, NOW);
    assert.deepEqual(times(l.keep), ['2024-03-31T10:00:00Z', '2024-03-02T10:00:01Z']);
  });
  it('years, months and days are calendar steps in the latest snapshot’s offset, hours are absolute', () => {
    // latest 2024-02-29 20:00-05:00 → −1y = 2023-02-29 = 2023-03-01 20:00-05:00 (Mar 2 01:00Z); −2h more = Mar 1 23:00Z.
    const g = [snap('2024-02-29T20:00:00-05:00'), snap('2023-03-01T23:00:01Z'), snap('2023-03-01T23:00:00Z')];
    const r = applyPolicy(g, { within: '1y2h' }, NOW);
    assert.deepEqual(times(r.keep), ['2024-02-29T20:00:00-05:00', '2023-03-01T23:00:01Z']);
  });
  it('latest is the newest snapshot not in the future', () => {
    const g = [snap('2030-01-01T00:00:00Z'), snap('2025-05-30T00:00:00Z'), snap('2025-05-25T00:00:01Z'), snap('2025-05-24T23:59:59Z')];
    const r = applyPolicy(g, { within: '5d' }, NOW);
    assert.deepEqual(times(r.remove), ['2025-05-24T23:59:59Z']);
  });
  it('a time whose offset is the local zone’s follows that zone’s DST (Go Local location)', () => {
    const g = [snap('2021-04-02T12:00:00+02:00'), snap('2021-03-26T11:30:00+01:00')];
    assert.equal(applyPolicy(g, { within: '7d' }, { now: NOW, timeZone: 'UTC' }).keep.length, 2);
    assert.equal(applyPolicy(g, { within: '7d' }, { now: NOW, timeZone: 'Europe/Berlin' }).keep.length, 1);
    // London in winter is +00:00. 7 days before 2021-11-02 12:00 London is 2021-10-26 12:00 BST = 11:00Z.
    // Written as +00:00 the latest time is in Go's Local (London); written as Z it is UTC (fixed).
    const london = [snap('2021-11-02T12:00:00+00:00'), snap('2021-10-26T11:30:00Z')];
    assert.equal(applyPolicy(london, { within: '7d' }, { now: NOW, timeZone: 'Europe/London' }).keep.length, 2);
    const z = [snap('2021-11-02T12:00:00Z'), snap('2021-10-26T11:30:00Z')];
    assert.equal(applyPolicy(z, { within: '7d' }, { now: NOW, timeZone: 'Europe/London' }).keep.length, 1);
  });
  it('within buckets keep the newest of each bucket inside the window', () => {
    const g = [snap('2024-05-03T10:00:00Z'), snap('2024-05-03T09:00:00Z'), snap('2024-05-02T10:00:00Z'), snap('2024-04-01T10:00:00Z')];
    const r = applyPolicy(g, { withinDaily: '3d' }, NOW);
    assert.deepEqual(times(r.keep), ['2024-05-03T10:00:00Z', '2024-05-02T10:00:00Z']);
    assert.deepEqual(r.reasons[1]!.matches, ['daily within 3d']);
  });
  it('bad durations and times are reported', () => {
    assert.throws(() => applyPolicy([snap('2024-05-03T10:00:00Z')], { within: '3w' }, NOW), UsageError);
    assert.throws(() => applyPolicy([snap('2024-13-03T10:00:00Z')], { last: 1 }, NOW), IntegrityError);
    assert.throws(() => applyPolicy([snap('2024-05-03 10:00:00Z')], { last: 1 }, NOW), IntegrityError);
  });
});

describe('filter, group and JSON', () => {
  const s1 = snap('2024-05-03T10:00:00+00:00', { hostname: 'a', paths: ['/z', '/y'], tags: ['t2', 't1'], username: 'root', uid: 0, extra: 1 });
  const s2 = snap('2024-05-02T10:00:00.500000000Z', { hostname: 'b', paths: ['/y'], parent: 'cd'.repeat(32) });
  const s3 = snap('2024-05-01T10:00:00Z', { hostname: 'a', paths: ['/y', '/z'] });

  it('filters by host (any), tag lists (all of one list) and paths (all)', () => {
    assert.deepEqual(filterSnapshots([s1, s2, s3], { hosts: ['b', 'x'] }), [s2]);
    assert.deepEqual(filterSnapshots([s1, s2, s3], { tags: [['t1', 't2']] }), [s1]);
    assert.deepEqual(filterSnapshots([s1, s2, s3], { tags: [['t1', 'nope'], ['', 'x']] }), [s2, s3], 'an empty tag matches untagged snapshots at once');
    assert.deepEqual(filterSnapshots([s1, s2, s3], { paths: ['/z', '/y'] }), [s1, s3]);
  });
  it('groups by sorted paths and sorted tags without touching the input', () => {
    const gs = groupSnapshots([s1, s2, s3], parseGroupBy('host,paths'));
    assert.deepEqual(gs.map((g) => g.keyJson), ['{"hostname":"a","paths":["/y","/z"],"tags":null}', '{"hostname":"b","paths":["/y"],"tags":null}']);
    assert.equal(gs[0]!.snapshots.length, 2);
    assert.deepEqual(gs[0]!.snapshots[0]!.tags, ['t2', 't1'], 'tags unsorted unless grouping by tags');
    assert.deepEqual(s1.paths, ['/z', '/y']);
    const bt = groupSnapshots([s1, s2], parseGroupBy('tags'));
    assert.deepEqual(bt.map((g) => g.key), [{ tags: ['t1', 't2'] }, {}], 'ordered by key JSON bytes: [ sorts before null');
  });
  it('prints restic 0.14’s forget JSON', () => {
    const plan = forgetPlan([s1, s2, s3], { last: 1 }, {}, 'host', { now: NOW });
    assert.equal(JSON.stringify(plan), JSON.stringify([
      {
        tags: null, host: 'a', paths: null,
        keep: [{ time: '2024-05-03T10:00:00Z', tree: s1.tree, paths: ['/y', '/z'], hostname: 'a', username: 'root', tags: ['t2', 't1'], id: s1.id, short_id: s1.id.slice(0, 8) }],
        remove: [{ time: '2024-05-01T10:00:00Z', tree: s3.tree, paths: ['/y', '/z'], hostname: 'a', id: s3.id, short_id: s3.id.slice(0, 8) }],
        reasons: [{ snapshot: { time: '2024-05-03T10:00:00Z', tree: s1.tree, paths: ['/y', '/z'], hostname: 'a', username: 'root', tags: ['t2', 't1'] }, matches: ['last snapshot'], counters: {} }],
      },
      {
        tags: null, host: 'b', paths: null,
        keep: [{ time: '2024-05-02T10:00:00.5Z', parent: s2.parent, tree: s2.tree, paths: ['/y'], hostname: 'b', id: s2.id, short_id: s2.id.slice(0, 8) }],
        remove: null,
        reasons: [{ snapshot: { time: '2024-05-02T10:00:00.5Z', parent: s2.parent, tree: s2.tree, paths: ['/y'], hostname: 'b' }, matches: ['last snapshot'], counters: {} }],
      },
    ]));
    assert.deepEqual(forgetPlan([s1, s2, s3], {}, {}, 'host'), [], 'an empty policy prints nothing');
    assert.throws(() => forgetPlan([s1], { last: 1 }, {}, 'hosts,colour'), UsageError);
  });
});
