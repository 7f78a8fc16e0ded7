import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  calendar,
  compareGoTime,
  formatGoTime,
  goTimeFromStat,
  goTimeFromUnixNs,
  goTimeToUnixNs,
  localOffsetAt,
  nowGoTime,
  parseGoTime,
  toDate,
  ZERO_GO_TIME,
} from '../../src/repository/gotime.js';
import { IntegrityError } from '../../src/core/errors.js';

test('parse keeps nanoseconds and offset', () => {
  assert.deepEqual(parseGoTime('1970-01-01T00:00:01.000000001Z'), { unixSec: 1, nsec: 1, offsetSec: 0 });
  assert.deepEqual(parseGoTime('1970-01-01T02:00:00+02:00'), { unixSec: 0, nsec: 0, offsetSec: 7200 });
  assert.deepEqual(parseGoTime('1969-12-31T20:30:00.5-03:30'), { unixSec: 0, nsec: 500_000_000, offsetSec: -12600 });
  // 2023-11-14T22:13:20Z is unix 1700000000
  assert.deepEqual(parseGoTime('2023-11-14T22:13:20.12Z'), { unixSec: 1_700_000_000, nsec: 120_000_000, offsetSec: 0 });
  assert.deepEqual(parseGoTime('1969-12-31T23:59:59.999999999Z'), { unixSec: -1, nsec: 999_999_999, offsetSec: 0 });
  // more than 9 fraction digits: Go keeps the first 9
  assert.equal(parseGoTime('2023-11-14T22:13:20.1234567891Z').nsec, 123_456_789);
});

test('format is Go RFC3339Nano: trailing zeros trimmed, Z for offset 0, ±hh:mm otherwise', () => {
  assert.equal(formatGoTime({ unixSec: 0, nsec: 100_000_000, offsetSec: 0 }), '1970-01-01T00:00:00.1Z');
  assert.equal(formatGoTime({ unixSec: 0, nsec: 0, offsetSec: 0 }), '1970-01-01T00:00:00Z');
  assert.equal(formatGoTime({ unixSec: 1_700_000_000, nsec: 5, offsetSec: 3600 }), '2023-11-14T23:13:20.000000005+01:00');
  assert.equal(formatGoTime({ unixSec: 1_700_000_000, nsec: 0, offsetSec: -(9 * 3600 + 30 * 60) }), '2023-11-14T12:43:20-09:30');
  // offsets with seconds (local mean time): the clock includes them, the printed zone truncates them
  assert.equal(formatGoTime({ unixSec: 0, nsec: 0, offsetSec: 53 * 60 + 28 }), '1970-01-01T00:53:28+00:53');
});

test('round trips of times restic wrote', () => {
  for (const s of [
    '2026-11-21T12:40:53.058652842Z',
    '2026-11-21T13:31:22.48384016Z',
    '2026-11-21T13:31:22.17Z',
    '2022-03-27T03:00:00.000000001+02:00',
    '1901-12-13T21:45:52+01:00',
    '0001-01-01T00:00:00Z',
    '9999-12-31T23:59:59.999999999Z',
    '2020-02-29T23:59:59-12:00',
  ]) {
    assert.equal(formatGoTime(parseGoTime(s)), s);
  }
});

test('zero time is Go zero time', () => {
  assert.equal(formatGoTime(ZERO_GO_TIME), '0001-01-01T00:00:00Z');
  assert.deepEqual(parseGoTime('0001-01-01T00:00:00Z'), ZERO_GO_TIME);
});

test('years outside 0..9999 are clamped like restic FixTime', () => {
  // 10000-01-01T00:00:00Z = 253402300800 (one second after 9999-12-31T23:59:59Z)
  assert.equal(formatGoTime({ unixSec: 253_402_300_800, nsec: 0, offsetSec: 0 }), '9999-01-01T00:00:00Z');
  // 10000-02-29 (10000 is a leap year) becomes 9999-03-01
  assert.equal(formatGoTime({ unixSec: 253_402_300_800 + 59 * 86_400, nsec: 7, offsetSec: 0 }), '9999-03-01T00:00:00.000000007Z');
  // year -1 starts 365 days before year 0 (0000-01-01 = -62167219200)
  assert.equal(formatGoTime({ unixSec: -62_198_755_200 + 3600, nsec: 0, offsetSec: 0 }), '0000-01-01T01:00:00Z');
});

test('invalid times are IntegrityErrors', () => {
  for (const s of ['2021-02-29T00:00:00Z', '2021-01-01 00:00:00Z', '2021-01-01T00:00:00', '2021-13-01T00:00:00Z', '2021-01-01T24:00:00Z', '']) {
    assert.throws(() => parseGoTime(s), IntegrityError, s);
  }
});

test('goTimeFromStat normalises nanoseconds and uses the local offset by default', () => {
  assert.deepEqual(goTimeFromStat(10n, -1n, 0), { unixSec: 9, nsec: 999_999_999, offsetSec: 0 });
  assert.deepEqual(goTimeFromStat(10n, 1_500_000_000n, 60), { unixSec: 11, nsec: 500_000_000, offsetSec: 60 });
  assert.deepEqual(goTimeFromUnixNs(-1n, 0), { unixSec: -1, nsec: 999_999_999, offsetSec: 0 });
  const t = goTimeFromStat(1_700_000_000n, 0n);
  assert.equal(t.offsetSec, Math.round(-new Date(1_700_000_000_000).getTimezoneOffset() * 60) || 0);
  assert.equal(goTimeToUnixNs({ unixSec: -1, nsec: 999_999_999, offsetSec: 0 }), -1n);
});

test('local offset follows TZ per instant (DST) and keeps LMT seconds', () => {
  const saved = process.env.TZ;
  try {
    process.env.TZ = 'Europe/Berlin';
    assert.equal(localOffsetAt(1_593_597_600), 7200); // 2020-07-01 summer time
    assert.equal(localOffsetAt(1_577_880_000), 3600); // 2020-01-01 winter
    assert.equal(localOffsetAt(-4_000_000_000), 3208); // 1843: local mean time +00:53:28
    process.env.TZ = 'America/St_Johns';
    assert.equal(localOffsetAt(1_577_880_000), -(3 * 3600 + 30 * 60));
  } finally {
    if (saved === undefined) delete process.env.TZ;
    else process.env.TZ = saved;
  }
});

test('nowGoTime is close to Date.now and has the local offset', () => {
  const before = Date.now();
  const t = nowGoTime();
  const after = Date.now();
  const ms = t.unixSec * 1000 + t.nsec / 1e6;
  assert.ok(ms >= before - 3 && ms <= after + 3, `${ms} not within [${before}, ${after}]`);
  assert.equal(t.offsetSec, localOffsetAt(t.unixSec));
});

test('compare and toDate ignore the offset', () => {
  const a = parseGoTime('2022-01-01T01:00:00+01:00');
  const b = parseGoTime('2022-01-01T00:00:00Z');
  assert.equal(compareGoTime(a, b), 0);
  assert.equal(compareGoTime(parseGoTime('2022-01-01T00:00:00.000000001Z'), b), 1);
  assert.equal(compareGoTime(parseGoTime('2021-12-31T23:59:59.999999999Z'), b), -1);
  assert.equal(toDate(a).toISOString(), '2022-01-01T00:00:00.000Z');
  assert.equal(toDate(parseGoTime('2022-01-01T00:00:00.123999999Z')).toISOString(), '2022-01-01T00:00:00.123Z');
});

test('calendar fields are in the time own offset, ISO weeks like Go', () => {
  const c = calendar(parseGoTime('2022-01-01T00:30:00+01:00')); // 2021-12-31T23:30Z
  assert.equal(c.year, 2022);
  assert.equal(c.month, 1);
  assert.equal(c.day, 1);
  assert.equal(c.hour, 0);
  assert.equal(c.isoYear, 2021); // Saturday 2022-01-01 belongs to 2021-W52
  assert.equal(c.isoWeek, 52);
  const sun = calendar(parseGoTime('2021-01-03T12:00:00Z'));
  assert.deepEqual([sun.weekday, sun.isoYear, sun.isoWeek], [0, 2020, 53]);
  const mon = calendar(parseGoTime('2024-12-30T00:00:00Z'));
  assert.deepEqual([mon.weekday, mon.isoYear, mon.isoWeek], [1, 2025, 1]);
  const mid = calendar(parseGoTime('2023-06-15T23:59:59-07:00'));
  assert.deepEqual([mid.year, mid.month, mid.day, mid.hour, mid.isoWeek, mid.yearDay], [2023, 6, 15, 23, 24, 166]);
  const zero = calendar(ZERO_GO_TIME);
  assert.deepEqual([zero.year, zero.month, zero.day, zero.weekday], [1, 1, 1, 1]); // 0001-01-01 was a Monday
});

/** The straightforward regex parser that tryParseGoTime replaced: the reference for the differential test. */
function referenceParse(s: string) {
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:[.,](\d+))?(Z|[+-]\d{2}:\d{2})$/.exec(s);
  if (!m) return undefined;
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number) as [number, number, number, number, number, number];
  const dim = [31, year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0) ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1];
  if (month < 1 || month > 12 || day < 1 || day > dim! || hour > 23 || minute > 59 || second > 59) return undefined;
  const nsec = m[7] ? Number(m[7].slice(0, 9).padEnd(9, '0')) : 0;
  let offsetSec = 0;
  if (m[8] !== 'Z') {
    const zh = Number(m[8]!.slice(1, 3));
    const zm = Number(m[8]!.slice(4, 6));
    if (zh > 24 || zm > 59) return undefined;
    offsetSec = (zh * 3600 + zm * 60) * (m[8]![0] === '-' ? -1 : 1);
  }
  const d = new Date(0);
  d.setUTCFullYear(year, month - 1, day); // not Date.UTC: it maps years 0-99 to 1900-1999
  d.setUTCHours(hour, minute, second, 0);
  const unixSec = d.getTime() / 1000 - offsetSec;
  return { unixSec, nsec, offsetSec };
}

test('tryParseGoTime agrees with a regex parser on valid, mutated and truncated times', async () => {
  const { tryParseGoTime } = await import('../../src/repository/gotime.js');
  const seeds = ['2026-11-21T23:50:16.287836401+01:00', '1970-01-01T00:00:00Z', '2024-02-29T12:00:00,5-07:30', '0001-01-01T00:00:00Z', '9999-12-31T23:59:59.9999999999999+24:00', '2023-02-29T00:00:00Z', '2021-06-30T24:00:00Z'];
  const alphabet = '0123456789-:TZ.,+ x';
  let rand = 12345;
  const next = (n: number) => {
    rand = (rand * 1103515245 + 12345) & 0x7fffffff;
    return rand % n;
  };
  let valid = 0;
  for (let k = 0; k < 20000; k++) {
    let s = seeds[next(seeds.length)]!;
    const edits = next(3);
    for (let e = 0; e < edits; e++) {
      const at = next(s.length + 1);
      const op = next(3);
      const ch = alphabet[next(alphabet.length)]!;
      s = op === 0 ? s.slice(0, at) + ch + s.slice(at + 1) : op === 1 ? s.slice(0, at) + s.slice(at + 1) : s.slice(0, at) + ch + s.slice(at);
    }
    const got = tryParseGoTime(s);
    const want = referenceParse(s);
    if (want) valid++;
    assert.deepEqual(got && { unixSec: got.unixSec, nsec: got.nsec, offsetSec: got.offsetSec }, want, JSON.stringify(s));
  }
  assert.ok(valid > 2000, `enough valid inputs among the mutations (${valid})`);
});
