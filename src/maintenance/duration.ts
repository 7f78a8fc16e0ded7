// Calendar durations for `forget --keep-within*`: a sequence of <integer><unit> with the units
// y (years), m (months), d (days) and h (hours), e.g. `1y5m7d2h`, as restic 0.14 accepts them.
// Years, months and days are applied with calendar arithmetic (Go's AddDate); hours as absolute
// time. See shared/reference/restic-repository-format.md §13.5.

import { UsageError } from '../core/errors.js';

export interface Duration {
  years: number;
  months: number;
  days: number;
  hours: number;
}

/** Largest magnitude accepted per component. restic panics on numbers that do not fit an int64;
 *  we refuse anything whose calendar arithmetic would leave the exactly representable range. */
const MAX_COMPONENT = 10_000_000;

const HINT = 'write a sequence of <number><unit> with the units y, m, d, h, e.g. 1y5m7d2h';

/**
 * Parse a restic duration. Rules (restic 0.14): surrounding whitespace is ignored; each number may
 * carry one leading `-`; a later component of the same unit replaces an earlier one (`1d2d` = 2d);
 * the empty string is the zero duration. Any other input throws UsageError.
 */
export function parseDuration(input: string): Duration {
  const d: Duration = { years: 0, months: 0, days: 0, hours: 0 };
  let s = input.trim();
  while (s !== '') {
    let negative = false;
    if (s[0] === '-') {
      negative = true;
      s = s.slice(1);
    }
    const m = /^[0-9]+/.exec(s);
    if (!m) {
      throw new UsageError(`invalid duration "${input}": no number found`, HINT);
    }
    const digits = m[0];
    s = s.slice(digits.length);
    const abs = Number(digits);
    if (!Number.isSafeInteger(abs) || abs > MAX_COMPONENT) {
      throw new UsageError(`invalid duration "${input}": number ${digits} is too large`, `use at most ${MAX_COMPONENT} per unit`);
    }
    const num = negative ? -abs : abs;
    if (s === '') {
      throw new UsageError(`invalid duration "${input}": no unit found after number ${num}`, HINT);
    }
    switch (s[0]) {
      case 'y': d.years = num; break;
      case 'm': d.months = num; break;
      case 'd': d.days = num; break;
      case 'h': d.hours = num; break;
      default:
        throw new UsageError(`invalid duration "${input}": invalid unit ${JSON.stringify(s[0])} after number ${num}`, HINT);
    }
    s = s.slice(1);
  }
  // Normalise -0 to 0 so that formatting and comparisons stay simple.
  d.years += 0; d.months += 0; d.days += 0; d.hours += 0;
  return d;
}

/** restic's text form: non-zero components in the order y, m, d, h (`1y2m`, `36h`, `` for zero). */
export function formatDuration(d: Duration): string {
  let s = '';
  if (d.years !== 0) s += `${d.years}y`;
  if (d.months !== 0) s += `${d.months}m`;
  if (d.days !== 0) s += `${d.days}d`;
  if (d.hours !== 0) s += `${d.hours}h`;
  return s;
}

export function isZeroDuration(d: Duration): boolean {
  return d.years === 0 && d.months === 0 && d.days === 0 && d.hours === 0;
}
