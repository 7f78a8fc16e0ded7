// Go time.Time as restic stores it in trees and snapshots: RFC3339 with nanoseconds and the
// writer's zone offset. JS Date keeps neither (milliseconds only, no offset), so times travel as
// GoTime values and are only turned into Dates at the edges (display, utimes).
//
// All calendar arithmetic here is done on plain integers (days since 1970-01-01 in the proleptic
// Gregorian calendar), so years far outside Date's range (±275760) still compute correctly as long
// as the seconds fit a double exactly (|unixSec| < 2^53).

import { IntegrityError } from '../core/errors.js';

export interface GoTime {
  /** Whole seconds since 1970-01-01T00:00:00Z (may be negative). */
  unixSec: number;
  /** Nanoseconds within the second, 0..999999999. */
  nsec: number;
  /** Zone offset east of UTC in seconds (the writer's local offset at that instant; 0 prints as `Z`). */
  offsetSec: number;
}

export interface GoCalendar {
  year: number;
  /** 1..12 */
  month: number;
  /** 1..31 */
  day: number;
  /** 0..23 */
  hour: number;
  minute: number;
  second: number;
  /** 0 = Sunday … 6 = Saturday (Go's time.Weekday). */
  weekday: number;
  /** 1..366 */
  yearDay: number;
  /** ISO 8601 week-numbering year and week (Go's Time.ISOWeek). */
  isoYear: number;
  isoWeek: number;
}

const NS_PER_SEC = 1_000_000_000;
const SEC_PER_DAY = 86_400;

/** Go's zero time.Time (`0001-01-01T00:00:00Z`), what restic writes for times it never set. */
export const ZERO_GO_TIME: Readonly<GoTime> = Object.freeze({ unixSec: -62_135_596_800, nsec: 0, offsetSec: 0 });

export function isZeroGoTime(t: GoTime): boolean {
  return t.unixSec === ZERO_GO_TIME.unixSec && t.nsec === 0;
}

// ---- proleptic Gregorian day arithmetic (H. Hinnant's public-domain civil calendar algorithms) ----

/** Days since 1970-01-01 for a civil date. Day/month overflow normalises (Feb 29 of a common year = Mar 1). */
export function daysFromCivil(year: number, month: number, day: number): number {
  const y = month <= 2 ? year - 1 : year;
  const era = Math.floor(y / 400);
  const yoe = y - era * 400;
  const mp = month > 2 ? month - 3 : month + 9;
  const doy = Math.floor((153 * mp + 2) / 5) + day - 1;
  const doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy;
  return era * 146_097 + doe - 719_468;
}

/** Civil date for a count of days since 1970-01-01. */
export function civilFromDays(days: number): { year: number; month: number; day: number } {
  const z = days + 719_468;
  const era = Math.floor(z / 146_097);
  const doe = z - era * 146_097;
  const yoe = Math.floor((doe - Math.floor(doe / 1460) + Math.floor(doe / 36_524) - Math.floor(doe / 146_096)) / 365);
  const doy = doe - (365 * yoe + Math.floor(yoe / 4) - Math.floor(yoe / 100));
  const mp = Math.floor((5 * doy + 2) / 153);
  const day = doy - Math.floor((153 * mp + 2) / 5) + 1;
  const month = mp < 10 ? mp + 3 : mp - 9;
  return { year: yoe + era * 400 + (month <= 2 ? 1 : 0), month, day };
}

function isLeap(y: number): boolean {
  return (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0;
}

function daysInMonth(y: number, m: number): number {
  return m === 2 ? (isLeap(y) ? 29 : 28) : [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][m - 1]!;
}

// ---- construction ----

function normalise(sec: number, nsec: number, offsetSec: number): GoTime {
  let s = sec;
  let n = nsec;
  if (n < 0 || n >= NS_PER_SEC) {
    const carry = Math.floor(n / NS_PER_SEC);
    s += carry;
    n -= carry * NS_PER_SEC;
  }
  return { unixSec: s, nsec: n, offsetSec };
}

const MAX_DATE_MS = 8.64e15;

/** The process's local zone offset (seconds east of UTC) at the given instant, as restic's time.Local gives it. */
export function localOffsetAt(unixSec: number): number {
  const ms = Math.min(MAX_DATE_MS, Math.max(-MAX_DATE_MS, Math.floor(unixSec) * 1000));
  // getTimezoneOffset() is fast but rounds to whole minutes; before 1980 some zones used local
  // mean time with second offsets (Berlin +00:53:28 until 1893), which Go keeps, so ask Intl there.
  const off = ms < OLD_ZONE_LIMIT_MS ? exactOffsetAt(ms) : Math.round(-new Date(ms).getTimezoneOffset() * 60);
  return off === 0 ? 0 : off; // no -0
}

const OLD_ZONE_LIMIT_MS = 315_532_800_000; // 1980-01-01T00:00:00Z
let wallFormatter: { tz: string | undefined; fmt: Intl.DateTimeFormat } | undefined;

function exactOffsetAt(ms: number): number {
  const tz = process.env.TZ;
  if (!wallFormatter || wallFormatter.tz !== tz) {
    wallFormatter = {
      tz,
      fmt: new Intl.DateTimeFormat('en-US', {
        hourCycle: 'h23', era: 'short', year: 'numeric', month: 'numeric', day: 'numeric',
        hour: 'numeric', minute: 'numeric', second: 'numeric',
      }),
    };
  }
  try {
    const p: Record<string, string> = {};
    for (const part of wallFormatter.fmt.formatToParts(new Date(ms))) p[part.type] = part.value;
    let year = Number(p.year);
    if (p.era === 'BC' || p.era === 'B') year = 1 - year;
    const wall = daysFromCivil(year, Number(p.month), Number(p.day)) * SEC_PER_DAY + Number(p.hour) * 3600 + Number(p.minute) * 60 + Number(p.second);
    const off = wall - Math.floor(ms / 1000);
    if (Number.isFinite(off) && Math.abs(off) < 26 * 3600) return off;
  } catch {
    // fall through to the minute-precision offset
  }
  return Math.round(-new Date(ms).getTimezoneOffset() * 60);
}

/**
 * A GoTime from stat(2) fields (`BigIntStats.mtimeNs` split into seconds/nanoseconds, or any
 * sec/nsec pair). Without `offsetSec`, the local zone's offset at that instant is used, like Go's
 * `time.Unix`, which restic's stat-to-node code uses.
 */
export function goTimeFromStat(sec: bigint, nsec: bigint, offsetSec?: number): GoTime {
  let s = sec;
  let n = nsec;
  if (n < 0n || n >= 1_000_000_000n) {
    let carry = n / 1_000_000_000n;
    if (n < 0n && carry * 1_000_000_000n !== n) carry -= 1n;
    s += carry;
    n -= carry * 1_000_000_000n;
  }
  const unixSec = Number(s);
  return { unixSec, nsec: Number(n), offsetSec: offsetSec ?? localOffsetAt(unixSec) };
}

/** A GoTime from nanoseconds since the epoch (e.g. `BigIntStats.mtimeNs`). */
export function goTimeFromUnixNs(ns: bigint, offsetSec?: number): GoTime {
  return goTimeFromStat(0n, ns, offsetSec);
}

/** Nanoseconds since the epoch. */
export function goTimeToUnixNs(t: GoTime): bigint {
  return BigInt(t.unixSec) * 1_000_000_000n + BigInt(t.nsec);
}

/** A GoTime from a JS Date (millisecond precision), in the local offset unless one is given. */
export function goTimeFromDate(d: Date, offsetSec?: number): GoTime {
  const ms = d.getTime();
  if (!Number.isFinite(ms)) throw new IntegrityError('invalid date');
  const sec = Math.floor(ms / 1000);
  const t = normalise(sec, Math.round((ms - sec * 1000) * 1e6), 0);
  t.offsetSec = offsetSec ?? localOffsetAt(t.unixSec);
  return t;
}

// Wall-clock "now" with nanosecond resolution: Date.now() anchors a monotonic hrtime reading; the
// anchor is refreshed whenever the two disagree by more than 2 ms (clock steps, NTP slews).
let anchorNs: bigint | undefined;
function wallNowNs(): bigint {
  const hr = process.hrtime.bigint();
  const wallMs = BigInt(Date.now());
  if (anchorNs !== undefined) {
    const derived = anchorNs + hr;
    const diff = derived / 1_000_000n - wallMs;
    if (diff <= 2n && diff >= -2n) return derived;
  }
  anchorNs = wallMs * 1_000_000n - hr;
  return anchorNs + hr;
}

/** The current time in the process's local offset, as restic's `time.Now()` records it. */
export function nowGoTime(): GoTime {
  return goTimeFromUnixNs(wallNowNs());
}

/** The same instant shown in another offset. */
export function withOffset(t: GoTime, offsetSec: number): GoTime {
  return { unixSec: t.unixSec, nsec: t.nsec, offsetSec };
}

export function compareGoTime(a: GoTime, b: GoTime): number {
  if (a.unixSec !== b.unixSec) return a.unixSec < b.unixSec ? -1 : 1;
  if (a.nsec !== b.nsec) return a.nsec < b.nsec ? -1 : 1;
  return 0;
}

/** Same instant (offsets may differ), like Go's Time.Equal. */
export function equalGoTime(a: GoTime, b: GoTime): boolean {
  return compareGoTime(a, b) === 0;
}

/** A JS Date for the same instant (sub-millisecond part dropped; clamped to Date's range). */
export function toDate(t: GoTime): Date {
  const ms = t.unixSec * 1000 + Math.floor(t.nsec / 1e6);
  return new Date(Math.min(MAX_DATE_MS, Math.max(-MAX_DATE_MS, ms)));
}

/** Seconds as a float, the best `fs.utimes` can take (sub-microsecond precision is lost for current dates). */
export function toUnixSecondsFloat(t: GoTime): number {
  return t.unixSec + t.nsec / NS_PER_SEC;
}

// ---- calendar ----

/** Calendar fields of `t` in its own offset (what restic's forget policy buckets by). */
export function calendar(t: GoTime): GoCalendar {
  const local = t.unixSec + t.offsetSec;
  const days = Math.floor(local / SEC_PER_DAY);
  const secOfDay = local - days * SEC_PER_DAY;
  const { year, month, day } = civilFromDays(days);
  const weekday = (((days + 4) % 7) + 7) % 7; // 1970-01-01 was a Thursday
  const yearDay = days - daysFromCivil(year, 1, 1) + 1;
  // ISO week: the week (Mon..Sun) belongs to the year of its Thursday.
  const mondayBased = (weekday + 6) % 7;
  const thursday = days - mondayBased + 3;
  const isoYear = civilFromDays(thursday).year;
  const isoWeek = Math.floor((thursday - daysFromCivil(isoYear, 1, 1)) / 7) + 1;
  return {
    year, month, day,
    hour: Math.floor(secOfDay / 3600),
    minute: Math.floor((secOfDay % 3600) / 60),
    second: secOfDay % 60,
    weekday, yearDay, isoYear, isoWeek,
  };
}

// ---- text ----

function pad(n: number, width: number): string {
  return String(n).padStart(width, '0');
}

/**
 * restic's FixTime: a year before 0 or after 9999 is moved to 0 / 9999 (same month, day and
 * clock in the time's own offset; Feb 29 of a year that has none rolls to Mar 1, like Go's AddDate).
 */
export function clampGoTimeYear(t: GoTime): GoTime {
  const local = t.unixSec + t.offsetSec;
  const days = Math.floor(local / SEC_PER_DAY);
  const { year, month, day } = civilFromDays(days);
  if (year >= 0 && year <= 9999) return t;
  const target = year < 0 ? 0 : 9999;
  const secOfDay = local - days * SEC_PER_DAY;
  const newLocal = daysFromCivil(target, month, day) * SEC_PER_DAY + secOfDay;
  return { unixSec: newLocal - t.offsetSec, nsec: t.nsec, offsetSec: t.offsetSec };
}

// One-entry memo: a node's mtime and atime are usually the same instant, and neighbouring
// entries often share times.
let lastFormatted: { unixSec: number; nsec: number; offsetSec: number; text: string } | undefined;

/** RFC3339Nano exactly as Go writes it (`2006-01-02T15:04:05.999999999Z07:00`), years clamped to 0..9999. */
export function formatGoTime(input: GoTime): string {
  const m = lastFormatted;
  if (m && m.unixSec === input.unixSec && m.nsec === input.nsec && m.offsetSec === input.offsetSec) return m.text;
  const text = formatGoTimeUncached(input);
  lastFormatted = { unixSec: input.unixSec, nsec: input.nsec, offsetSec: input.offsetSec, text };
  return text;
}

function formatGoTimeUncached(input: GoTime): string {
  const t = clampGoTimeYear(input);
  const c = calendar(t);
  let s = `${pad(c.year, 4)}-${pad(c.month, 2)}-${pad(c.day, 2)}T${pad(c.hour, 2)}:${pad(c.minute, 2)}:${pad(c.second, 2)}`;
  if (t.nsec !== 0) s += '.' + pad(t.nsec, 9).replace(/0+$/, '');
  if (t.offsetSec === 0) return s + 'Z';
  // Go prints the offset as ±hh:mm, truncating any seconds part of the offset.
  let zone = Math.trunc(t.offsetSec / 60);
  let sign = '+';
  if (zone < 0) {
    sign = '-';
    zone = -zone;
  }
  return `${s}${sign}${pad(Math.floor(zone / 60), 2)}:${pad(zone % 60, 2)}`;
}

/** The number written by `n` ASCII digits at `at`, or -1. */
function digits(s: string, at: number, n: number): number {
  let v = 0;
  for (let k = at; k < at + n; k++) {
    const c = s.charCodeAt(k) - 0x30;
    if (!(c >= 0 && c <= 9)) return -1;
    v = v * 10 + c;
  }
  return v;
}

/**
 * Parses an RFC3339 time with any fraction (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±hh:mm)`); undefined when the
 * text is not one. Scanned by position: trees hold two times per node, and a regex match per time
 * was a large share of a tree decode's allocations.
 */
export function tryParseGoTime(s: string): GoTime | undefined {
  if (s.length < 20 || s.charCodeAt(4) !== 0x2d || s.charCodeAt(7) !== 0x2d || s.charCodeAt(10) !== 0x54 || s.charCodeAt(13) !== 0x3a || s.charCodeAt(16) !== 0x3a) return undefined;
  const year = digits(s, 0, 4);
  const month = digits(s, 5, 2);
  const day = digits(s, 8, 2);
  const hour = digits(s, 11, 2);
  const minute = digits(s, 14, 2);
  const second = digits(s, 17, 2);
  if (year < 0 || month < 0 || day < 0 || hour < 0 || minute < 0 || second < 0) return undefined;
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month)) return undefined;
  if (hour > 23 || minute > 59 || second > 59) return undefined;
  let i = 19;
  // Go keeps 9 digits of fraction and ignores the rest.
  let nsec = 0;
  const dot = s.charCodeAt(i);
  if (dot === 0x2e || dot === 0x2c) {
    const from = ++i;
    while (i < s.length && s.charCodeAt(i) >= 0x30 && s.charCodeAt(i) <= 0x39) {
      if (i - from < 9) nsec = nsec * 10 + (s.charCodeAt(i) - 0x30);
      i++;
    }
    if (i === from) return undefined;
    for (let k = Math.min(i - from, 9); k < 9; k++) nsec *= 10;
  }
  let offsetSec = 0;
  const z = s.charCodeAt(i);
  if (z === 0x5a) {
    if (i + 1 !== s.length) return undefined;
  } else if (z === 0x2b || z === 0x2d) {
    if (i + 6 !== s.length || s.charCodeAt(i + 3) !== 0x3a) return undefined;
    const zh = digits(s, i + 1, 2);
    const zm = digits(s, i + 4, 2);
    if (zh < 0 || zm < 0 || zh > 24 || zm > 59) return undefined;
    offsetSec = (zh * 3600 + zm * 60) * (z === 0x2d ? -1 : 1);
  } else return undefined;
  const local = daysFromCivil(year, month, day) * SEC_PER_DAY + hour * 3600 + minute * 60 + second;
  return { unixSec: local - offsetSec, nsec, offsetSec: offsetSec === 0 ? 0 : offsetSec };
}

/** Parses an RFC3339 time (`Z` or ±hh:mm, any fraction) keeping nanoseconds and offset. */
let lastParsed: { text: string; t: GoTime } | undefined;

export function parseGoTime(s: string): GoTime {
  const m = lastParsed;
  if (m && m.text === s) return { ...m.t };
  const t = tryParseGoTime(s);
  if (!t) {
    throw new IntegrityError(`invalid time ${JSON.stringify(s.length > 64 ? s.slice(0, 64) + '…' : s)}`, {
      hint: 'expected RFC3339 like 2006-01-02T15:04:05.999999999Z07:00',
    });
  }
  lastParsed = { text: s, t: { ...t } };
  return t;
}
