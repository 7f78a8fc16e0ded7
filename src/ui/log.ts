// Log lines on stderr at a chosen level (-v/--log-level). Results never go here: they go to stdout.

import type { ChalkInstance } from 'chalk';

export const LOG_LEVELS = ['error', 'warn', 'info', 'debug'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface Logger {
  readonly level: LogLevel;
  error(message: string): void;
  warn(message: string): void;
  info(message: string): void;
  debug(message: string): void;
  /** True when messages of `level` are shown (to skip building expensive debug text). */
  enabled(level: LogLevel): boolean;
}

export interface LoggerOptions {
  level: LogLevel;
  /** Writes one line (without newline); normally Progress.line so the spinner is not torn. */
  write: (line: string) => void;
  /** JSON lines ({"type":"log","level":..,"message":..}) instead of text. */
  json?: boolean;
  colors?: ChalkInstance;
}

export function createLogger(opts: LoggerOptions): Logger {
  const rank = (l: LogLevel) => LOG_LEVELS.indexOf(l);
  const max = rank(opts.level);
  const c = opts.colors;
  const paint: Record<LogLevel, (s: string) => string> = {
    error: (s) => (c ? c.red(s) : s),
    warn: (s) => (c ? c.yellow(s) : s),
    info: (s) => s,
    debug: (s) => (c ? c.dim(s) : s),
  };
  const emit = (level: LogLevel, message: string) => {
    if (rank(level) > max) return;
    if (opts.json) opts.write(JSON.stringify({ type: 'log', level, message }));
    else for (const line of message.split('\n')) opts.write(level === 'info' ? line : paint[level](`${level}: `) + line);
  };
  return {
    level: opts.level,
    error: (m) => emit('error', m),
    warn: (m) => emit('warn', m),
    info: (m) => emit('info', m),
    debug: (m) => emit('debug', m),
    enabled: (l) => rank(l) <= max,
  };
}
