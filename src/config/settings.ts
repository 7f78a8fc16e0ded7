// Where the repository location, the password and the connection options come from, in one
// documented order. Commands get a RepoSettings from DmctlCommand.settings(); the password is read
// lazily (only commands that open the repository ask for it) and never appears in errors or logs.

import { isatty } from 'node:tty';
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { DmctlError, EXIT_CODES, InterruptedError, UsageError, describeSystemError } from '../core/errors.js';
import type { LogLevel } from '../ui/log.js';
import { type Connection, defaultConfigFile, loadConnection } from './connection.js';
import { defaultCacheRoot } from '../repository/cache.js';

export type RepositorySource = '--repo' | 'DM_REPOSITORY' | 'connection file' | 'RESTIC_REPOSITORY' | 'RESTIC_REPOSITORY_FILE';
export type PasswordSource =
  | '--password-file'
  | 'DM_PASSWORD_FILE'
  | 'DM_PASSWORD'
  | 'connection file'
  | 'RESTIC_PASSWORD_FILE'
  | 'RESTIC_PASSWORD'
  | 'RESTIC_PASSWORD_COMMAND'
  | 'prompt';

/**
 * The resolution order, first match wins. The README documents exactly this; man pages print it.
 * The connection file only counts when the repository is the one it names (a connection to repo A
 * never lends its password or TLS options to `--repo B`).
 */
export const SETTINGS_RESOLUTION = {
  repository: [
    { source: '--repo', description: '-r/--repo flag: a path or URL' },
    { source: 'DM_REPOSITORY', description: 'environment variable' },
    { source: 'connection file', description: '"repository" in the connection file written by `dmctl repo connect`' },
    { source: 'RESTIC_REPOSITORY', description: 'environment variable (as restic)' },
    { source: 'RESTIC_REPOSITORY_FILE', description: 'file holding the location (as restic); surrounding white space removed' },
  ],
  password: [
    { source: '--password-file', description: 'file holding the password' },
    { source: 'DM_PASSWORD_FILE', description: 'environment variable naming a password file' },
    { source: 'DM_PASSWORD', description: 'environment variable holding the password' },
    { source: 'connection file', description: 'password file saved by `dmctl repo connect` (unless --no-persist-password)' },
    { source: 'RESTIC_PASSWORD_FILE', description: 'environment variable naming a password file (as restic)' },
    { source: 'RESTIC_PASSWORD', description: 'environment variable holding the password (as restic)' },
    { source: 'RESTIC_PASSWORD_COMMAND', description: 'command run with /bin/sh whose output is the password (as restic)' },
    { source: 'prompt', description: 'asked on the terminal, only when stdin and stderr are terminals' },
  ],
  configFile: [
    { source: '--config-file', description: 'flag' },
    { source: 'DM_CONFIG_FILE', description: 'environment variable' },
    { source: 'default', description: '$XDG_CONFIG_HOME/dmctl/connection.json, else ~/.config/dmctl/connection.json' },
  ],
  passwordFileRules:
    'a password file is read as restic reads it: a UTF-8 byte order mark is dropped, UTF-16 files with a byte order mark are converted to UTF-8, ' +
    'and white space (spaces, tabs, CR, LF...) at the start and the end is removed; environment variables are used exactly as given',
} as const;

/** Environment variables dmctl reads (man pages' ENVIRONMENT section is generated from this list). */
export const ENVIRONMENT: ReadonlyArray<{ name: string; description: string }> = [
  { name: 'DM_REPOSITORY', description: 'repository location when --repo is not given' },
  { name: 'DM_PASSWORD_FILE', description: 'file holding the repository password' },
  { name: 'DM_PASSWORD', description: 'the repository password (prefer a file: environments can leak)' },
  { name: 'DM_CONFIG_FILE', description: 'connection file when --config-file is not given' },
  { name: 'DM_LOG_LEVEL', description: 'log level when -v/--log-level is not given: error, warn, info or debug' },
  { name: 'RESTIC_REPOSITORY', description: 'repository location, after DM_REPOSITORY and the connection file' },
  { name: 'RESTIC_REPOSITORY_FILE', description: 'file holding the repository location' },
  { name: 'RESTIC_PASSWORD_FILE', description: 'file holding the password, after the connection file' },
  { name: 'RESTIC_PASSWORD', description: 'the password, after RESTIC_PASSWORD_FILE' },
  { name: 'RESTIC_PASSWORD_COMMAND', description: 'command printing the password, after RESTIC_PASSWORD' },
  { name: 'XDG_CONFIG_HOME', description: 'base directory of the default connection file' },
  { name: 'DM_CACHE_DIR', description: 'cache of index files and tree packs of remote repositories, when --cache-dir is not given' },
  { name: 'XDG_CACHE_HOME', description: 'base directory of the default cache ($XDG_CACHE_HOME/dmctl, else ~/.cache/dmctl)' },
  { name: 'NO_COLOR', description: 'when set and not empty, no colours' },
  { name: 'FORCE_COLOR', description: 'colours even when not writing to a terminal (0 disables)' },
];

/** Flag values the base command hands over (names as on the command line). */
export interface RepoFlagValues {
  repo?: string;
  'password-file'?: string;
  'config-file'?: string;
  'log-level'?: string;
  quiet?: boolean;
  cacert?: string;
  'insecure-tls'?: boolean;
  connections?: number;
  profile?: string;
  'profile-file'?: string;
  'server-cert-fingerprint'?: string;
  'retry-lock'?: string;
  'cache-dir'?: string;
  'no-cache'?: boolean;
}

export interface PasswordRequest {
  /** Ask twice on a prompt (repo init, key add); other sources are used as they are. */
  confirm?: boolean;
}

export interface RepoSettings {
  /** Repository location (path or URL), undefined when no source names one. */
  repository: string | undefined;
  repositorySource: RepositorySource | undefined;
  /**
   * The password, read on first call (a fresh copy each call, so callers may zero it). Throws a
   * UsageError "no password given" when no source has one and no terminal to ask on.
   */
  password: (req?: PasswordRequest) => Promise<Buffer>;
  /** Which source password() will use (decided without reading it). */
  passwordSource: PasswordSource | undefined;
  /** Connection file path in effect, and its content when it exists. */
  configFile: string;
  connection: Connection | undefined;
  /** True when the connection file's repository is the repository in use (its options apply). */
  connectionApplies: boolean;
  logLevel: LogLevel;
  quiet: boolean;
  cacert: string | undefined;
  insecureTls: boolean;
  serverCertFingerprint: string | undefined;
  connections: number | undefined;
  /** Raw Kanister Profile JSON from --profile, --profile-file or the connection; parsed elsewhere. */
  profile: string | undefined;
  /** --retry-lock in milliseconds; 0 = fail at once when the repository is locked. */
  retryLockMs: number;
  /** Root of the local cache for remote repositories; undefined with --no-cache. */
  cacheDir: string | undefined;
}

export interface ResolveContext {
  env?: NodeJS.ProcessEnv;
  /** May we prompt? Default: stdin and stderr are both terminals. */
  interactive?: boolean;
  /** Reads a password on the terminal (default: @inquirer/prompts `password` on stderr). */
  prompt?: (message: string) => Promise<string>;
}

const LEVELS: readonly LogLevel[] = ['error', 'warn', 'info', 'debug'];

/** Go-style durations ("90s", "5m", "1h30m", "250ms") or a plain number of seconds; returns ms. */
export function parseDuration(text: string, what = '--retry-lock'): number {
  const s = text.trim();
  if (/^\d+(\.\d+)?$/.test(s)) return Math.round(Number(s) * 1000);
  const unitMs: Record<string, number> = { ns: 1e-6, us: 1e-3, 'µs': 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
  const re = /(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)/gy;
  let total = 0;
  let pos = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(s)) !== null) {
    total += Number(m[1]) * unitMs[m[2]!]!;
    pos = re.lastIndex;
  }
  if (s === '' || pos !== s.length) {
    throw new UsageError(`invalid duration for ${what}: ${JSON.stringify(text)}`, 'use a number with a unit, e.g. 30s, 5m, 1h30m');
  }
  return Math.round(total);
}

// White space as Go's unicode.IsSpace sees it (restic trims password files with strings.TrimSpace).
const SPACE_CODEPOINTS = [0x85, 0xa0, 0x1680, 0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000];
const SPACE_SEQS = SPACE_CODEPOINTS.map((cp) => Buffer.from(String.fromCodePoint(cp), 'utf8'));
const isAsciiSpace = (b: number) => b === 0x20 || (b >= 0x09 && b <= 0x0d);

function spaceAt(buf: Buffer, i: number): number {
  if (isAsciiSpace(buf[i]!)) return 1;
  for (const seq of SPACE_SEQS) if (buf.length - i >= seq.length && buf.subarray(i, i + seq.length).equals(seq)) return seq.length;
  return 0;
}

function spaceEndingAt(buf: Buffer, end: number): number {
  if (isAsciiSpace(buf[end - 1]!)) return 1;
  for (const seq of SPACE_SEQS) if (end >= seq.length && buf.subarray(end - seq.length, end).equals(seq)) return seq.length;
  return 0;
}

/**
 * The password in a password file's bytes, as restic reads it: UTF-8 BOM dropped, UTF-16 (with
 * BOM) converted to UTF-8, then leading and trailing white space removed. Bytes are kept as they
 * are otherwise (a password need not be valid UTF-8).
 */
export function passwordFromFileBytes(data: Buffer): Buffer {
  let buf = data;
  if (buf.length >= 3 && buf[0] === 0xef && buf[1] === 0xbb && buf[2] === 0xbf) buf = buf.subarray(3);
  else if (buf.length >= 2 && buf[0] === 0xff && buf[1] === 0xfe) buf = Buffer.from(buf.subarray(2).toString('utf16le'), 'utf8');
  else if (buf.length >= 2 && buf[0] === 0xfe && buf[1] === 0xff) {
    const le = Buffer.from(buf.subarray(2, 2 + ((buf.length - 2) & ~1)));
    le.swap16();
    buf = Buffer.from(le.toString('utf16le'), 'utf8');
  }
  let start = 0;
  let end = buf.length;
  for (let n; start < end && (n = spaceAt(buf, start)) > 0; ) start += n;
  for (let n; end > start && (n = spaceEndingAt(buf, end)) > 0; ) end -= n;
  return Buffer.from(buf.subarray(start, end));
}

/** Reads a password file; errors name the file and the source, never the content. */
export async function readPasswordFile(path: string, source: string): Promise<Buffer> {
  let data: Buffer;
  try {
    data = await readFile(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new UsageError(`password file ${path} (from ${source}) does not exist`, `check ${source}`);
    throw new UsageError(`cannot read password file ${path} (from ${source}): ${describeSystemError(err)}`, `check ${source} and the file's permissions`);
  }
  try {
    return passwordFromFileBytes(data);
  } finally {
    data.fill(0);
  }
}

/** Runs RESTIC_PASSWORD_COMMAND with /bin/sh; its stdout (trimmed like a file) is the password. */
export async function passwordFromCommand(command: string, env: NodeJS.ProcessEnv): Promise<Buffer> {
  return new Promise<Buffer>((resolvePromise, reject) => {
    const child = spawn('/bin/sh', ['-c', command], { stdio: ['inherit', 'pipe', 'inherit'], env });
    const chunks: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => chunks.push(c));
    child.on('error', (err) =>
      reject(new UsageError(`cannot run RESTIC_PASSWORD_COMMAND: ${describeSystemError(err)}`, 'check RESTIC_PASSWORD_COMMAND')),
    );
    child.on('close', (code, signal) => {
      const all = Buffer.concat(chunks);
      chunks.forEach((c) => c.fill(0));
      if (code !== 0) {
        all.fill(0);
        reject(
          new UsageError(
            `RESTIC_PASSWORD_COMMAND failed (${signal ? `signal ${signal}` : `exit status ${code}`})`,
            'run the command by hand to see why',
          ),
        );
        return;
      }
      const pw = passwordFromFileBytes(all);
      all.fill(0);
      resolvePromise(pw);
    });
  });
}

async function defaultPrompt(message: string): Promise<string> {
  const { password } = await import('@inquirer/prompts');
  try {
    return await password({ message, mask: false }, { input: process.stdin, output: process.stderr });
  } catch (err) {
    if ((err as Error)?.name === 'ExitPromptError' || (err as Error)?.name === 'AbortPromptError') throw new InterruptedError();
    throw err;
  }
}

const NO_PASSWORD_HINT =
  'give the password with --password-file FILE, DM_PASSWORD_FILE, DM_PASSWORD, `dmctl repo connect`, RESTIC_PASSWORD_FILE, RESTIC_PASSWORD or RESTIC_PASSWORD_COMMAND, or run in a terminal to be asked';

const nonEmpty = (v: string | undefined): string | undefined => (v === undefined || v === '' ? undefined : v);

/**
 * Resolves flags + environment + connection file into RepoSettings (order: SETTINGS_RESOLUTION).
 * Reads the connection file and RESTIC_REPOSITORY_FILE; the password itself only when asked.
 */
export async function resolveSettings(flags: RepoFlagValues, ctx: ResolveContext = {}): Promise<RepoSettings> {
  const env = ctx.env ?? process.env;

  // Connection file.
  const configFile = nonEmpty(flags['config-file']) ?? nonEmpty(env.DM_CONFIG_FILE) ?? defaultConfigFile(env);
  const connection = await loadConnection(configFile);

  // Repository.
  let repository: string | undefined;
  let repositorySource: RepositorySource | undefined;
  if (nonEmpty(flags.repo)) [repository, repositorySource] = [flags.repo, '--repo'];
  else if (nonEmpty(env.DM_REPOSITORY)) [repository, repositorySource] = [env.DM_REPOSITORY, 'DM_REPOSITORY'];
  else if (connection) [repository, repositorySource] = [connection.repository, 'connection file'];
  else if (nonEmpty(env.RESTIC_REPOSITORY)) {
    if (nonEmpty(env.RESTIC_REPOSITORY_FILE)) {
      throw new UsageError('RESTIC_REPOSITORY and RESTIC_REPOSITORY_FILE are both set', 'unset one of them, or pass --repo');
    }
    [repository, repositorySource] = [env.RESTIC_REPOSITORY, 'RESTIC_REPOSITORY'];
  } else if (nonEmpty(env.RESTIC_REPOSITORY_FILE)) {
    const file = env.RESTIC_REPOSITORY_FILE!;
    let data: Buffer;
    try {
      data = await readFile(file);
    } catch (err) {
      throw new UsageError(`cannot read RESTIC_REPOSITORY_FILE ${file}: ${describeSystemError(err)}`, 'check RESTIC_REPOSITORY_FILE');
    }
    const loc = passwordFromFileBytes(data).toString('utf8');
    if (loc === '') throw new UsageError(`RESTIC_REPOSITORY_FILE ${file} is empty`, 'write the repository location into it');
    [repository, repositorySource] = [loc, 'RESTIC_REPOSITORY_FILE'];
  }
  const connectionApplies = Boolean(connection && repository === connection.repository);
  const copts = connectionApplies ? connection!.options : {};

  // Password source (decided now, read later).
  // tty.isatty, not process.stdin.isTTY: touching process.stdin turns a piped stdin non-blocking,
  // and backup-stream reads fd 0 directly.
  const interactive = ctx.interactive ?? Boolean(isatty(0) && process.stderr.isTTY);
  type Reader = () => Promise<Buffer>;
  let passwordSource: PasswordSource | undefined;
  let reader: Reader | undefined;
  const fromEnvString = (v: string): Reader => async () => Buffer.from(v, 'utf8');
  if (nonEmpty(flags['password-file'])) {
    const f = flags['password-file']!;
    [passwordSource, reader] = ['--password-file', () => readPasswordFile(f, '--password-file')];
  } else if (nonEmpty(env.DM_PASSWORD_FILE)) {
    const f = env.DM_PASSWORD_FILE!;
    [passwordSource, reader] = ['DM_PASSWORD_FILE', () => readPasswordFile(f, 'DM_PASSWORD_FILE')];
  } else if (nonEmpty(env.DM_PASSWORD)) {
    [passwordSource, reader] = ['DM_PASSWORD', fromEnvString(env.DM_PASSWORD!)];
  } else if (connectionApplies && connection!.passwordFile) {
    const f = connection!.passwordFile;
    [passwordSource, reader] = ['connection file', () => readPasswordFile(f, `the connection file ${configFile}`)];
  } else if (nonEmpty(env.RESTIC_PASSWORD_FILE)) {
    const f = env.RESTIC_PASSWORD_FILE!;
    [passwordSource, reader] = ['RESTIC_PASSWORD_FILE', () => readPasswordFile(f, 'RESTIC_PASSWORD_FILE')];
  } else if (nonEmpty(env.RESTIC_PASSWORD)) {
    [passwordSource, reader] = ['RESTIC_PASSWORD', fromEnvString(env.RESTIC_PASSWORD!)];
  } else if (nonEmpty(env.RESTIC_PASSWORD_COMMAND)) {
    const cmd = env.RESTIC_PASSWORD_COMMAND!;
    [passwordSource, reader] = ['RESTIC_PASSWORD_COMMAND', () => passwordFromCommand(cmd, env)];
  } else if (interactive) {
    passwordSource = 'prompt';
  }

  let cached: Promise<Buffer> | undefined;
  const prompt = ctx.prompt ?? defaultPrompt;
  const password = async (req: PasswordRequest = {}): Promise<Buffer> => {
    if (!cached) {
      if (passwordSource === 'prompt') {
        cached = (async () => {
          const where = repository ? ` for ${repository}` : '';
          const first = await prompt(`enter password${where}:`);
          if (req.confirm) {
            const again = await prompt('enter password again:');
            if (again !== first) throw new UsageError('passwords do not match', 'type the same password twice');
          }
          return Buffer.from(first, 'utf8');
        })();
      } else if (reader) {
        cached = reader();
      } else {
        cached = Promise.reject(new UsageError('no password given', NO_PASSWORD_HINT));
      }
      cached = cached.then((pw) => {
        if (pw.length === 0) throw new UsageError(`empty password from ${passwordSource}`, 'an empty password is not allowed; ' + NO_PASSWORD_HINT);
        return pw;
      });
      // A failed read may be retried (e.g. after fixing the file in an interactive session).
      cached.catch(() => {
        cached = undefined;
      });
    }
    return Buffer.from(await cached);
  };

  // Other options: flag > connection (when it applies).
  const levelText = nonEmpty(flags['log-level']) ?? nonEmpty(env.DM_LOG_LEVEL) ?? 'warn';
  if (!LEVELS.includes(levelText as LogLevel)) {
    throw new UsageError(`invalid log level ${JSON.stringify(levelText)}`, `use one of ${LEVELS.join(', ')}`);
  }
  let profile: string | undefined = nonEmpty(flags.profile);
  if (profile !== undefined && nonEmpty(flags['profile-file'])) {
    throw new UsageError('--profile and --profile-file are mutually exclusive', 'give the Kanister profile one way');
  }
  if (profile === undefined && nonEmpty(flags['profile-file'])) {
    const f = flags['profile-file']!;
    try {
      profile = await readFile(f, 'utf8');
    } catch (err) {
      throw new UsageError(`cannot read --profile-file ${f}: ${describeSystemError(err)}`, 'check the path');
    }
  }
  profile ??= copts.profile;

  if (flags.connections !== undefined && (!Number.isInteger(flags.connections) || flags.connections < 1)) {
    throw new UsageError('--connections must be a positive integer', 'e.g. --connections 8');
  }

  return {
    repository,
    repositorySource,
    password,
    passwordSource,
    configFile,
    connection,
    connectionApplies,
    logLevel: levelText as LogLevel,
    quiet: Boolean(flags.quiet),
    cacert: nonEmpty(flags.cacert) ?? copts.cacert,
    insecureTls: Boolean(flags['insecure-tls'] || copts.insecureTls),
    serverCertFingerprint: nonEmpty(flags['server-cert-fingerprint'])?.toLowerCase().replace(/:/g, '') ?? copts.serverCertFingerprint,
    connections: flags.connections ?? copts.connections,
    profile,
    retryLockMs: nonEmpty(flags['retry-lock']) ? parseDuration(flags['retry-lock']!) : 0,
    cacheDir: flags['no-cache'] ? undefined : (nonEmpty(flags['cache-dir']) ?? nonEmpty(env.DM_CACHE_DIR) ?? defaultCacheRoot(env)),
  };
}

/** Throws NoRepository-style usage error when no source named a repository. */
export function requireRepository(s: RepoSettings): string {
  if (s.repository) return s.repository;
  throw new DmctlError('no-repository-given', 'no repository given', {
    hint: 'pass -r/--repo, set DM_REPOSITORY, or run `dmctl repo connect`',
    exitCode: EXIT_CODES.USAGE,
  });
}
