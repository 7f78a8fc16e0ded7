// The `forget` decision of restic 0.14, reproduced exactly: select snapshots by host/tag/path,
// group them, and apply a retention policy to each group. Pure functions, no I/O.
//
// Facts this module depends on (shared/reference/restic-repository-format.md §8, §9.5, §13, and
// restic 0.14's behaviour observed with the real binary):
// - each group is sorted newest first with a *stable* sort (equal instants keep the input order);
// - `latest` is the newest snapshot time that is not in the future (the zero time, year 1, if all are);
// - keep-within keeps snapshots strictly after latest − D; D's years/months/days are applied with
//   Go AddDate normalisation in latest's location, then the hours as absolute time;
// - counted buckets (last, hourly, daily, ISO weekly, monthly, yearly) each fire on a change of
//   bucket value, several buckets can fire for the same snapshot; keep-tag consumes no counter;
// - calendar fields come from the UTC offset stored in each snapshot's own time string;
// - a snapshot time whose offset equals the offset of the machine's local zone at that instant is,
//   in Go, *in the local zone*: AddDate on it follows the local zone's DST rules. `timeZone`
//   in the options names that zone (default: this process's local zone).
//
// The local time helpers below work on the RFC3339 strings directly; they are meant to be replaced
// by src/repository/gotime.ts once it exists.

import { IntegrityError, UsageError } from '../core/errors.js';
import { type Duration, formatDuration, isZeroDuration, parseDuration } from './duration.js';

// ---------------------------------------------------------------------------------------------
// Public types

export interface PolicySnapshot {
  /** Full 64-hex snapshot ID (storage ID of the snapshot file). */
  id: string;
  /** RFC3339Nano time as stored in the snapshot file. */
  time: string;
  hostname?: string;
  paths: string[];
  tags?: string[];
  [k: string]: unknown;
}

export interface ForgetPolicy {
  last?: number;
  hourly?: number;
  daily?: number;
  weekly?: number;
  monthly?: number;
  yearly?: number;
  within?: string;
  withinHourly?: string;
  withinDaily?: string;
  withinWeekly?: string;
  withinMonthly?: string;
  withinYearly?: string;
  /** Keep snapshots that carry all tags of at least one of these lists (`--keep-tag a,b`). */
  tags?: string[][];
}

export interface SnapshotFilter {
  /** Snapshot hostname must be one of these (empty/absent: any). */
  hosts?: string[];
  /** Snapshot must carry all tags of at least one list (empty/absent: any). */
  tags?: string[][];
  /** Snapshot must contain every one of these paths (exact string match). */
  paths?: string[];
}

export interface GroupBy {
  host: boolean;
  paths: boolean;
  tags: boolean;
}

export interface GroupKey {
  /** Present when grouping by host. */
  hostname?: string;
  /** Present when grouping by paths (sorted). */
  paths?: string[];
  /** Present when grouping by tags and the snapshots have tags (sorted). */
  tags?: string[];
}

export interface SnapshotGroup {
  key: GroupKey;
  /** restic's group key JSON, `{"hostname":…,"paths":…,"tags":…}`; groups are ordered by it. */
  keyJson: string;
  snapshots: PolicySnapshot[];
}

export interface KeepReason {
  snapshot: PolicySnapshot;
  matches: string[];
  /** Counters left after this snapshot; only non-zero ones, as restic prints them. */
  counters: Record<string, number>;
}

export interface PolicyResult {
  keep: PolicySnapshot[];
  remove: PolicySnapshot[];
  reasons: KeepReason[];
}

export interface PolicyOptions {
  /** The present moment (snapshots after it are never `latest`). Default: now. */
  now?: Date;
  /** IANA zone Go would use as its Local location (restic's TZ). Default: this process's zone. */
  timeZone?: string;
}

/** A snapshot as restic 0.14 prints it inside `forget --json` reasons (Go struct field order). */
export interface SnapshotJson {
  time: string;
  parent?: string;
  tree: string | null;
  paths: string[] | null;
  hostname?: string;
  username?: string;
  uid?: number;
  gid?: number;
  excludes?: string[];
  tags?: string[];
  original?: string;
}

export interface ForgetSnapshotJson extends SnapshotJson {
  id: string;
  short_id: string;
}

export interface ForgetReasonJson {
  snapshot: SnapshotJson;
  matches: string[];
  counters: Record<string, number>;
}

/** One element of the array `restic forget --dry-run --json` prints (0.14). */
export interface ForgetGroupJson {
  tags: string[] | null;
  host: string;
  paths: string[] | null;
  keep: ForgetSnapshotJson[] | null;
  remove: ForgetSnapshotJson[] | null;
  reasons: ForgetReasonJson[] | null;
}

// ---------------------------------------------------------------------------------------------
// Time helpers (private): instants as (sec, nsec), calendar in a fixed offset, Go AddDate.

interface Instant {
  /** Unix seconds (integer). */
  sec: number;
  /** 0..999999999 */
  nsec: number;
}

interface SnapTime extends Instant {
  /** Offset east of UTC in seconds, as written in the string. */
  off: number;
  /** The string ended in `Z` (Go: UTC location, never the local zone). */
  utc: boolean;
}

function cmpInstant(a: Instant, b: Instant): number {
  if (a.sec !== b.sec) return a.sec < b.sec ? -1 : 1;
  if (a.nsec !== b.nsec) return a.nsec < b.nsec ? -1 : 1;
  return 0;
}

function floorDiv(a: number, b: number): number {
  return Math.floor(a / b);
}

/** Days since 1970-01-01 of a proleptic Gregorian date (any integer year, month 1..12). */
function daysFromCivil(y: number, m: number, d: number): number {
  const yy = m <= 2 ? y - 1 : y;
  const era = floorDiv(yy, 400);
  const yoe = yy - era * 400;
  const mp = m > 2 ? m - 3 : m + 9;
  const doy = floorDiv(153 * mp + 2, 5) + d - 1;
  const doe = yoe * 365 + floorDiv(yoe, 4) - floorDiv(yoe, 100) + doy;
  return era * 146097 + doe - 719468;
}

function civilFromDays(z: number): { y: number; m: number; d: number } {
  const zz = z + 719468;
  const era = floorDiv(zz, 146097);
  const doe = zz - era * 146097;
  const yoe = floorDiv(doe - floorDiv(doe, 1460) + floorDiv(doe, 36524) - floorDiv(doe, 146096), 365);
  const doy = doe - (365 * yoe + floorDiv(yoe, 4) - floorDiv(yoe, 100));
  const mp = floorDiv(5 * doy + 2, 153);
  const d = doy - floorDiv(153 * mp + 2, 5) + 1;
  const m = mp < 10 ? mp + 3 : mp - 9;
  return { y: yoe + era * 400 + (m <= 2 ? 1 : 0), m, d };
}

function daysInMonth(y: number, m: number): number {
  return daysFromCivil(m === 12 ? y + 1 : y, m === 12 ? 1 : m + 1, 1) - daysFromCivil(y, m, 1);
}

interface Calendar {
  year: number;
  month: number;
  day: number;
  hour: number;
  min: number;
  sec: number;
  /** days since epoch of the local date */
  days: number;
}

/** Calendar fields of an instant seen at a fixed offset. */
function calendarAt(t: Instant, off: number): Calendar {
  const local = t.sec + off;
  const days = floorDiv(local, 86400);
  const sod = local - days * 86400;
  const { y, m, d } = civilFromDays(days);
  return { year: y, month: m, day: d, hour: floorDiv(sod, 3600), min: floorDiv(sod % 3600, 60), sec: sod % 60, days };
}

function isoWeek(c: Calendar): { year: number; week: number } {
  const dow = ((c.days + 4) % 7 + 7) % 7; // 0 = Sunday (1970-01-01 was a Thursday)
  const isoDow = dow === 0 ? 7 : dow; // Monday = 1 … Sunday = 7
  const thursday = c.days - isoDow + 4;
  const year = civilFromDays(thursday).y;
  const week = floorDiv(thursday - daysFromCivil(year, 1, 1), 7) + 1;
  return { year, week };
}

const RFC3339_RE = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})$/;

/** Parse an RFC3339(Nano) time the way Go's time.Parse(RFC3339) does; null if malformed. */
function parseSnapTime(s: string): SnapTime | null {
  const m = RFC3339_RE.exec(s);
  if (!m) return null;
  const [year, month, day, hour, min, sec] = m.slice(1, 7).map(Number) as [number, number, number, number, number, number];
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month) || hour > 23 || min > 59 || sec > 59) return null;
  const frac = m[7] ?? '';
  const nsec = frac === '' ? 0 : Number((frac + '000000000').slice(0, 9));
  let off = 0;
  const zone = m[8]!;
  const utc = zone === 'Z';
  if (!utc) {
    const oh = Number(zone.slice(1, 3));
    const om = Number(zone.slice(4, 6));
    if (oh > 24 || om > 59) return null;
    off = (oh * 3600 + om * 60) * (zone[0] === '-' ? -1 : 1);
  }
  const wall = daysFromCivil(year, month, day) * 86400 + hour * 3600 + min * 60 + sec;
  return { sec: wall - off, nsec, off, utc };
}

function pad(n: number, w: number): string {
  const s = String(Math.abs(n)).padStart(w, '0');
  return n < 0 ? '-' + s : s;
}

/** Go's RFC3339Nano formatting of an instant at an offset (trailing fraction zeros dropped, 0 ⇒ Z). */
function formatSnapTime(t: SnapTime): string {
  const c = calendarAt(t, t.off);
  let s = `${pad(c.year, 4)}-${pad(c.month, 2)}-${pad(c.day, 2)}T${pad(c.hour, 2)}:${pad(c.min, 2)}:${pad(c.sec, 2)}`;
  if (t.nsec !== 0) s += '.' + String(t.nsec).padStart(9, '0').replace(/0+$/, '');
  if (t.off === 0) return s + 'Z';
  const a = Math.abs(t.off);
  return s + (t.off < 0 ? '-' : '+') + pad(Math.floor(a / 3600), 2) + ':' + pad(Math.floor((a % 3600) / 60), 2);
}

/** Offset (seconds east of UTC) of an IANA zone at an instant, from the ICU data Node carries. */
type ZoneFn = (unixSec: number) => number;

const MIN_ZONE_SEC = -62135596800; // 0001-01-01T00:00:00Z
const MAX_ZONE_SEC = 253402300799; // 9999-12-31T23:59:59Z

const zoneFns = new Map<string, ZoneFn>();

function zoneOffsetFn(timeZone: string): ZoneFn {
  let fn = zoneFns.get(timeZone);
  if (!fn) {
    fn = makeZoneOffsetFn(timeZone);
    zoneFns.set(timeZone, fn);
  }
  return fn;
}

function makeZoneOffsetFn(timeZone: string): ZoneFn {
  let fmt: Intl.DateTimeFormat;
  try {
    fmt = new Intl.DateTimeFormat('en-US', {
      timeZone, hourCycle: 'h23', era: 'short', year: 'numeric', month: 'numeric', day: 'numeric',
      hour: 'numeric', minute: 'numeric', second: 'numeric',
    });
  } catch {
    throw new UsageError(`unknown time zone "${timeZone}"`, 'use an IANA zone name such as Europe/Berlin or UTC');
  }
  const cache = new Map<number, number>();
  return (unixSec: number): number => {
    const t = Math.min(Math.max(unixSec, MIN_ZONE_SEC), MAX_ZONE_SEC);
    const hit = cache.get(t);
    if (hit !== undefined) return hit;
    const parts: Record<string, string> = {};
    for (const p of fmt.formatToParts(new Date(t * 1000))) parts[p.type] = p.value;
    let y = Number(parts.year);
    if (parts.era === 'BC' || parts.era === 'B') y = 1 - y;
    const wall = daysFromCivil(y, Number(parts.month), Number(parts.day)) * 86400 +
      Number(parts.hour) * 3600 + Number(parts.minute) * 60 + Number(parts.second);
    const off = wall - t;
    if (cache.size > 4096) cache.clear();
    cache.set(t, off);
    return off;
  };
}

function localZoneName(): string {
  return Intl.DateTimeFormat().resolvedOptions().timeZone ?? 'UTC';
}

/** A time plus the zone Go attaches to it: a fixed offset, or the local zone. */
interface Located extends Instant {
  off: number;
  zone: ZoneFn | null;
}

/** Go's time.Parse attaches the Local location when the offset equals Local's at that instant. */
function locate(t: SnapTime, local: ZoneFn): Located {
  if (!t.utc && local(t.sec) === t.off) return { sec: t.sec, nsec: t.nsec, off: t.off, zone: local };
  return { sec: t.sec, nsec: t.nsec, off: t.off, zone: null };
}

/** Go: t.AddDate(-years, -months, -days).Add(-hours·1h), for a time in its location. */
function subtractDuration(t: Located, d: Duration): Instant {
  const c = calendarAt(t, t.off);
  const m0 = c.month - 1 - d.months;
  const year = c.year - d.years + floorDiv(m0, 12);
  const month = m0 - floorDiv(m0, 12) * 12 + 1;
  const days = daysFromCivil(year, month, 1) + (c.day - d.days - 1);
  const wall = days * 86400 + c.hour * 3600 + c.min * 60 + c.sec;
  let off = t.off;
  if (t.zone) {
    // Go's Date(): look the offset up at the wall time taken as UTC, then re-check at the
    // resulting instant — which always amounts to the offset in force at wall − offset(wall).
    off = t.zone(wall - t.zone(wall));
  }
  let sec = wall - off;
  let nsec = t.nsec;
  // time.Hour * time.Duration(-h) is int64 arithmetic in Go and wraps on overflow.
  const durNs = BigInt.asIntN(64, 3_600_000_000_000n * BigInt(-d.hours));
  const dsec = Number(durNs / 1_000_000_000n);
  nsec += Number(durNs % 1_000_000_000n);
  sec += dsec;
  if (nsec >= 1e9) { sec += 1; nsec -= 1e9; } else if (nsec < 0) { sec -= 1; nsec += 1e9; }
  return { sec, nsec };
}

// ---------------------------------------------------------------------------------------------
// Selection and grouping

/** Go's sort.Strings order: byte-wise on UTF-8. */
function byteCompare(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

function sortedStrings(list: readonly string[]): string[] {
  return [...list].sort(byteCompare);
}

/** Parse a `--tag`/`--keep-tag` value: comma-separated, whitespace around each tag removed. */
export function parseTagList(s: string): string[] {
  return s.split(',').map((t) => t.trim());
}

/** restic's Snapshot.HasTags, including its quirk: an empty tag matches an untagged snapshot at once. */
function hasTags(sn: PolicySnapshot, list: readonly string[]): boolean {
  const tags = sn.tags ?? [];
  for (const tag of list) {
    if (tag === '' && tags.length === 0) return true;
    if (!tags.includes(tag)) return false;
  }
  return true;
}

function hasTagList(sn: PolicySnapshot, lists: readonly (readonly string[])[] | undefined): boolean {
  if (!lists || lists.length === 0) return true;
  return lists.some((l) => hasTags(sn, l));
}

export function filterSnapshots(snaps: readonly PolicySnapshot[], filter: SnapshotFilter = {}): PolicySnapshot[] {
  const hosts = filter.hosts ?? [];
  const paths = filter.paths ?? [];
  return snaps.filter((sn) =>
    (hosts.length === 0 || hosts.includes(sn.hostname ?? '')) &&
    hasTagList(sn, filter.tags) &&
    paths.every((p) => (sn.paths ?? []).includes(p)));
}

/** `--group-by`: comma-separated tokens host|hosts, path|paths, tag|tags; empty tokens are ignored. */
export function parseGroupBy(s: string): GroupBy {
  const g: GroupBy = { host: false, paths: false, tags: false };
  for (const tok of s.split(',')) {
    switch (tok) {
      case 'host': case 'hosts': g.host = true; break;
      case 'path': case 'paths': g.paths = true; break;
      case 'tag': case 'tags': g.tags = true; break;
      case '': break;
      default:
        throw new UsageError(`unknown grouping option: '${tok}'`, "use host, paths and/or tags separated by commas, or '' for no grouping");
    }
  }
  return g;
}

/**
 * Split snapshots into groups with restic's keys. Like restic, the returned snapshots carry sorted
 * paths, and sorted tags when grouping by tags (copies; the input is not modified). Input order is
 * kept within each group; groups are ordered by their key JSON.
 */
export function groupSnapshots(snaps: readonly PolicySnapshot[], groupBy: GroupBy): SnapshotGroup[] {
  const groups = new Map<string, SnapshotGroup>();
  for (const orig of snaps) {
    const sn: PolicySnapshot = { ...orig, paths: sortedStrings(orig.paths ?? []) };
    if (groupBy.tags && orig.tags) sn.tags = sortedStrings(orig.tags);
    const key: GroupKey = {};
    if (groupBy.host) key.hostname = sn.hostname ?? '';
    if (groupBy.paths) key.paths = sn.paths;
    if (groupBy.tags && sn.tags && sn.tags.length > 0) key.tags = sn.tags;
    const keyJson = JSON.stringify({ hostname: key.hostname ?? '', paths: key.paths ?? null, tags: key.tags ?? null });
    let g = groups.get(keyJson);
    if (!g) {
      g = { key, keyJson, snapshots: [] };
      groups.set(keyJson, g);
    }
    g.snapshots.push(sn);
  }
  return [...groups.values()].sort((a, b) => byteCompare(a.keyJson, b.keyJson));
}

// ---------------------------------------------------------------------------------------------
// Policy

interface CompiledPolicy {
  counts: [number, number, number, number, number, number];
  within: Duration;
  withinBuckets: [Duration, Duration, Duration, Duration, Duration];
  tags: string[][];
}

function checkCount(name: string, v: number | undefined): number {
  if (v === undefined) return 0;
  if (!Number.isSafeInteger(v)) {
    throw new UsageError(`--keep-${name} needs a whole number, got ${v}`);
  }
  return v;
}

function compilePolicy(p: ForgetPolicy): CompiledPolicy {
  const dur = (s: string | undefined): Duration => (s === undefined ? { years: 0, months: 0, days: 0, hours: 0 } : parseDuration(s));
  return {
    counts: [
      checkCount('last', p.last), checkCount('hourly', p.hourly), checkCount('daily', p.daily),
      checkCount('weekly', p.weekly), checkCount('monthly', p.monthly), checkCount('yearly', p.yearly),
    ],
    within: dur(p.within),
    withinBuckets: [dur(p.withinHourly), dur(p.withinDaily), dur(p.withinWeekly), dur(p.withinMonthly), dur(p.withinYearly)],
    tags: p.tags ?? [],
  };
}

function compiledIsEmpty(c: CompiledPolicy): boolean {
  return c.tags.length === 0 && c.counts.every((n) => n === 0) && isZeroDuration(c.within) && c.withinBuckets.every(isZeroDuration);
}

/**
 * True when no rule is set. Like restic 0.14 a negative count is a rule (it keeps nothing), and a
 * duration that parses to zero (`0d`) is not. Throws UsageError for malformed durations.
 */
export function isEmptyPolicy(p: ForgetPolicy): boolean {
  return compiledIsEmpty(compilePolicy(p));
}

const BUCKET_REASONS = ['last snapshot', 'hourly snapshot', 'daily snapshot', 'weekly snapshot', 'monthly snapshot', 'yearly snapshot'] as const;
const COUNTER_NAMES = ['last', 'hourly', 'daily', 'weekly', 'monthly', 'yearly'] as const;
const WITHIN_REASONS = ['hourly within', 'daily within', 'weekly within', 'monthly within', 'yearly within'] as const;

/** Bucket value of a calendar for bucket kind 1..5 (hourly … yearly); kind 0 (last) uses the index. */
function bucketValue(kind: number, c: Calendar, nr: number): number {
  switch (kind) {
    case 0: return nr;
    case 1: return c.year * 1000000 + c.month * 10000 + c.day * 100 + c.hour;
    case 2: return c.year * 10000 + c.month * 100 + c.day;
    case 3: { const w = isoWeek(c); return w.year * 100 + w.week; }
    case 4: return c.year * 100 + c.month;
    default: return c.year;
  }
}

function snapTimeOf(sn: PolicySnapshot): SnapTime {
  const t = typeof sn.time === 'string' ? parseSnapTime(sn.time) : null;
  if (!t) {
    throw new IntegrityError(`snapshot ${String(sn.id).slice(0, 8)} has an invalid time ${JSON.stringify(sn.time)}`, {
      hint: 'the snapshot file is damaged; remove it with `dmctl forget ID` or inspect it with `dmctl cat snapshot ID`',
    });
  }
  return t;
}

function formatTagList(l: readonly string[]): string {
  return '[' + l.join(', ') + ']';
}

function applyCompiled(group: readonly PolicySnapshot[], c: CompiledPolicy, opts: PolicyOptions): PolicyResult {
  const timed = group.map((sn) => ({ sn, t: snapTimeOf(sn) }));
  // Newest first; Array.prototype.sort is stable, like Go's sort.Stable.
  timed.sort((a, b) => cmpInstant(b.t, a.t));
  const list = timed.map((x) => x.sn);

  if (compiledIsEmpty(c)) {
    return { keep: list, remove: [], reasons: list.map((sn) => ({ snapshot: sn, matches: ['policy is empty'], counters: {} })) };
  }
  if (list.length === 0) return { keep: [], remove: [], reasons: [] };

  const local = zoneOffsetFn(opts.timeZone ?? localZoneName());
  const nowMs = (opts.now ?? new Date()).getTime();
  const now: Instant = { sec: Math.floor(nowMs / 1000), nsec: (nowMs - Math.floor(nowMs / 1000) * 1000) * 1e6 };

  // latest: newest time strictly before now; the zero time (0001-01-01 UTC) when there is none.
  let latest: Located = { sec: MIN_ZONE_SEC, nsec: 0, off: 0, zone: null };
  let latestSet = false;
  for (const { t } of timed) {
    if (cmpInstant(t, latest) > 0 && cmpInstant(t, now) < 0) {
      latest = locate(t, local);
      latestSet = true;
    }
  }
  if (!latestSet) latest = { sec: MIN_ZONE_SEC, nsec: 0, off: 0, zone: null };

  const withinLimit = isZeroDuration(c.within) ? null : subtractDuration(latest, c.within);
  const withinLimits = c.withinBuckets.map((d) => (isZeroDuration(d) ? null : subtractDuration(latest, d)));
  const counts = [...c.counts];
  const lastVal = [-1, -1, -1, -1, -1, -1];
  const lastWithin = [-1, -1, -1, -1, -1];

  const keep: PolicySnapshot[] = [];
  const remove: PolicySnapshot[] = [];
  const reasons: KeepReason[] = [];

  timed.forEach(({ sn, t }, nr) => {
    const matches: string[] = [];
    const cal = calendarAt(t, t.off);
    for (const l of c.tags) {
      if (hasTags(sn, l)) matches.push(`has tags ${formatTagList(l)}`);
    }
    if (withinLimit && cmpInstant(t, withinLimit) > 0) {
      matches.push(`within ${formatDuration(c.within)}`);
    }
    for (let i = 0; i < 6; i++) {
      if (counts[i]! > 0) {
        const v = bucketValue(i, cal, nr);
        if (v !== lastVal[i]) {
          lastVal[i] = v;
          counts[i]!--;
          matches.push(BUCKET_REASONS[i]!);
        }
      }
    }
    for (let i = 0; i < 5; i++) {
      const limit = withinLimits[i];
      if (limit && cmpInstant(t, limit) > 0) {
        const v = bucketValue(i + 1, cal, nr);
        if (v !== lastWithin[i]) {
          lastWithin[i] = v;
          matches.push(`${WITHIN_REASONS[i]!} ${formatDuration(c.withinBuckets[i]!)}`);
        }
      }
    }
    if (matches.length > 0) {
      keep.push(sn);
      const counters: Record<string, number> = {};
      counts.forEach((n, i) => { if (n !== 0) counters[COUNTER_NAMES[i]!] = n; });
      reasons.push({ snapshot: sn, matches, counters });
    } else {
      remove.push(sn);
    }
  });
  return { keep, remove, reasons };
}

/**
 * Apply a policy to one group (restic's ApplyPolicy). `keep` and `remove` are newest first;
 * `reasons` is parallel to `keep`. An empty policy keeps everything ("policy is empty").
 * A Date as third argument is taken as `now` (the brief's signature).
 */
export function applyPolicy(group: readonly PolicySnapshot[], policy: ForgetPolicy, now?: Date | PolicyOptions): PolicyResult {
  const opts: PolicyOptions = now instanceof Date ? { now } : (now ?? {});
  return applyCompiled(group, compilePolicy(policy), opts);
}

// ---------------------------------------------------------------------------------------------
// The JSON restic prints

function optString(v: unknown): string | undefined {
  return typeof v === 'string' && v !== '' ? v : undefined;
}

function optNumber(v: unknown): number | undefined {
  return typeof v === 'number' && v !== 0 ? v : undefined;
}

function optList(v: unknown): string[] | undefined {
  return Array.isArray(v) && v.length > 0 ? (v as string[]) : undefined;
}

/** The snapshot fields restic 0.14 knows, in its order, with its omit-when-empty rules. */
export function snapshotJson(sn: PolicySnapshot): SnapshotJson {
  const o: Record<string, unknown> = { time: formatSnapTime(snapTimeOf(sn)) };
  const parent = optString(sn.parent);
  if (parent !== undefined) o.parent = parent;
  o.tree = typeof sn.tree === 'string' ? sn.tree : null;
  o.paths = Array.isArray(sn.paths) ? sn.paths : null;
  const rest: [string, unknown][] = [
    ['hostname', optString(sn.hostname)], ['username', optString(sn.username)], ['uid', optNumber(sn.uid)],
    ['gid', optNumber(sn.gid)], ['excludes', optList(sn.excludes)], ['tags', optList(sn.tags)], ['original', optString(sn.original)],
  ];
  for (const [k, v] of rest) if (v !== undefined) o[k] = v;
  return o as unknown as SnapshotJson;
}

function forgetSnapshotJson(sn: PolicySnapshot): ForgetSnapshotJson {
  return { ...snapshotJson(sn), id: sn.id, short_id: sn.id.slice(0, 8) };
}

/**
 * The whole forget decision, in exactly the JSON shape `restic forget --dry-run --json` prints in
 * 0.14: filter, group, apply the policy per group. An empty policy yields [] (restic then prints
 * nothing at all). Groups come in key order (restic's order is random: it iterates a Go map).
 */
export function forgetPlan(
  snaps: readonly PolicySnapshot[],
  policy: ForgetPolicy,
  filter: SnapshotFilter = {},
  groupBy: GroupBy | string = 'host,paths',
  opts: PolicyOptions = {},
): ForgetGroupJson[] {
  const compiled = compilePolicy(policy);
  const g = typeof groupBy === 'string' ? parseGroupBy(groupBy) : groupBy;
  const selected = filterSnapshots(snaps, filter);
  if (compiledIsEmpty(compiled)) return [];
  return groupSnapshots(selected, g).map((group) => {
    const r = applyCompiled(group.snapshots, compiled, opts);
    return {
      tags: group.key.tags ?? null,
      host: group.key.hostname ?? '',
      paths: group.key.paths ?? null,
      keep: r.keep.length > 0 ? r.keep.map(forgetSnapshotJson) : null,
      remove: r.remove.length > 0 ? r.remove.map(forgetSnapshotJson) : null,
      reasons: r.reasons.length > 0
        ? r.reasons.map((k) => ({ snapshot: snapshotJson(k.snapshot), matches: k.matches, counters: k.counters }))
        : null,
    };
  });
}
