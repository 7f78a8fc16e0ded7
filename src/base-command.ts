// The base of every dmctl command: shared flags, settings resolution, progress and logging on
// stderr, --json, signal handling, and the one mapping from errors to a line on stderr (or a JSON
// object on stdout under --json) and an exit code from EXIT_CODES.

import { Command, Errors, Flags, type Interfaces } from '@oclif/core';
import { DmctlError, EXIT_CODES, InterruptedError } from './core/errors.js';
import { releaseHeldLocks } from './core/held-locks.js';
import type { ProgressFn } from './core/progress.js';
import { type RepoSettings, type RepoFlagValues, resolveSettings } from './config/settings.js';
import { phaseOutputLine } from './kanister/output.js';
import { errColors } from './ui/format.js';
import { LOG_LEVELS, type LogLevel, type Logger, createLogger } from './ui/log.js';
import { type Progress, createProgress } from './ui/progress.js';

const REPO_GROUP = 'REPOSITORY';
const GLOBAL_GROUP = 'GLOBAL';

/** Flags every command has (inherited through DmctlCommand.baseFlags). */
export const globalFlags = {
  'log-level': Flags.string({
    char: 'v',
    aliases: ['verbose'],
    summary: 'Log level on stderr.',
    description: 'debug also prints stack traces of internal errors. Default: warn, or DM_LOG_LEVEL.',
    options: [...LOG_LEVELS],
    helpValue: 'error|warn|info|debug',
    helpGroup: GLOBAL_GROUP,
  }),
  quiet: Flags.boolean({
    char: 'q',
    summary: 'Show no progress (warnings and errors still go to stderr).',
    helpGroup: GLOBAL_GROUP,
  }),
};

/** Flags of commands that open a repository: `static flags = { ...repoFlags, ... }`. */
/** restic's --no-lock, for commands that only read. */
export const noLockFlag = Flags.boolean({
  summary: 'Do not take a shared lock (for read-only storage); a prune running meanwhile may remove what is being read.',
});

export const repoFlags = {
  repo: Flags.string({
    char: 'r',
    summary: 'Repository: a path or URL (s3:, azure:, gs:, rest:).',
    description: 'Default: DM_REPOSITORY, then the connection file, then RESTIC_REPOSITORY / RESTIC_REPOSITORY_FILE.',
    helpValue: 'LOCATION',
    helpGroup: REPO_GROUP,
  }),
  'password-file': Flags.string({
    summary: 'File holding the repository password.',
    description:
      'Read as restic reads it (surrounding white space removed). Default: DM_PASSWORD_FILE, DM_PASSWORD, the connection file, RESTIC_PASSWORD_FILE, RESTIC_PASSWORD, RESTIC_PASSWORD_COMMAND, then a prompt on a terminal.',
    helpValue: 'FILE',
    helpGroup: REPO_GROUP,
  }),
  'config-file': Flags.string({
    summary: 'Connection file written by `repo connect`.',
    description: 'Default: DM_CONFIG_FILE, else $XDG_CONFIG_HOME/dmctl/connection.json or ~/.config/dmctl/connection.json.',
    helpValue: 'FILE',
    helpGroup: REPO_GROUP,
  }),
  cacert: Flags.string({
    summary: 'PEM file with CA certificates to trust for TLS.',
    helpValue: 'FILE',
    helpGroup: REPO_GROUP,
  }),
  'insecure-tls': Flags.boolean({
    summary: 'Do not verify TLS certificates (tests only).',
    helpGroup: REPO_GROUP,
  }),
  'server-cert-fingerprint': Flags.string({
    summary: 'Pin the server certificate: hex SHA-256 of its DER bytes.',
    helpValue: 'HEX',
    helpGroup: REPO_GROUP,
  }),
  connections: Flags.integer({
    summary: 'Concurrent connections to the storage.',
    min: 1,
    helpValue: 'N',
    helpGroup: REPO_GROUP,
  }),
  profile: Flags.string({
    summary: 'Kanister Profile JSON (as {{ toJson .Profile }} renders it).',
    description: 'Holds credentials: prefer --profile-file, since command lines are visible to other users.',
    helpValue: 'JSON',
    exclusive: ['profile-file'],
    helpGroup: REPO_GROUP,
  }),
  'profile-file': Flags.string({
    summary: 'File holding Kanister Profile JSON.',
    helpValue: 'FILE',
    exclusive: ['profile'],
    helpGroup: REPO_GROUP,
  }),
  'retry-lock': Flags.string({
    summary: 'Keep retrying to lock the repository for this long (e.g. 30s, 5m).',
    helpValue: 'DURATION',
    helpGroup: REPO_GROUP,
  }),
  'cache-dir': Flags.string({
    summary: 'Where to cache index files and tree packs of remote repositories.',
    description: 'Default: DM_CACHE_DIR, else $XDG_CACHE_HOME/dmctl or ~/.cache/dmctl. Local repositories are never cached.',
    helpValue: 'DIR',
    helpGroup: REPO_GROUP,
  }),
  'no-cache': Flags.boolean({
    summary: 'Do not use a local cache (every tree and index file is read from the repository).',
    helpGroup: REPO_GROUP,
  }),
};

// oclif does not export these two from its public entry points.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type FlagOutput = { [name: string]: any };
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type ArgOutput = { [name: string]: any };

type InterruptHandler = () => void | Promise<void>;

/** Time the interrupt handlers get before dmctl exits anyway. */
const INTERRUPT_GRACE_MS = 10_000;

/** One line: newlines collapsed, other control characters shown as '?'. */
export function oneLine(s: string): string {
  return (
    s
      .split(/\r?\n/)
      .map((l) => l.trim())
      .filter((l) => l !== '')
      .join(' ')
      // eslint-disable-next-line no-control-regex
      .replace(/[\u0000-\u0008\u000b-\u001f\u007f]/g, '?')
  );
}

/** What the base command prints for an error. */
export interface ErrorReport {
  code: string;
  message: string;
  hint?: string;
  exitCode: number;
  /** Stack for internal errors, shown at -v debug only. */
  stack?: string;
}

function isParseError(err: unknown): err is Errors.CLIError & { parse?: unknown } {
  if (!(err instanceof Error)) return false;
  const e = err as Errors.CLIError & { parse?: unknown };
  return e instanceof Errors.CLIError && (Boolean(e.parse) || /^(CLIParseError|.*(Flag|Arg|Args).*Error)$/.test(e.constructor.name));
}

/**
 * The one shape of an error for the user: with --json one object on stdout; otherwise `dmctl: MESSAGE`
 * in red and `hint: HINT` dimmed on stderr. The stack only at debug level.
 */
export function writeErrorReport(rep: ErrorReport, json: boolean, debug = false): void {
  if (json) {
    const obj = { error: rep.code, message: rep.message, ...(rep.hint ? { hint: rep.hint } : {}), exitCode: rep.exitCode };
    process.stdout.write(JSON.stringify(obj) + '\n');
    if (rep.stack && debug) process.stderr.write(rep.stack + '\n');
    return;
  }
  const c = errColors();
  process.stderr.write(c.red(`dmctl: ${rep.message}`) + '\n');
  if (rep.hint) process.stderr.write(c.dim(`hint: ${rep.hint}`) + '\n');
  if (rep.stack && debug) process.stderr.write(c.dim(rep.stack) + '\n');
}

/** Maps anything thrown to what the user sees. Exported for tests. */
export function describeError(err: unknown, commandId?: string): ErrorReport {
  if (err instanceof DmctlError) {
    return { code: err.code, message: oneLine(err.message), ...(err.hint ? { hint: oneLine(err.hint) } : {}), exitCode: err.exitCode };
  }
  if (isParseError(err)) {
    // One line, so scripts and people see the whole problem: oclif's message (without its
    // argument table and "See more help" tail), then where to look.
    const e = err as Errors.CLIError & { args?: Array<{ name?: string }> };
    let msg = err.message.replace(/See more help with --help/g, '');
    if (Array.isArray(e.args) && e.constructor.name === 'RequiredArgsError') {
      const names = e.args.map((a) => (a.name ?? '').toUpperCase()).filter(Boolean);
      msg = `missing required argument${names.length === 1 ? '' : 's'}: ${names.join(' ')}`;
    }
    const help = `dmctl ${commandId ? commandId.replace(/:/g, ' ') + ' ' : ''}--help`;
    return { code: 'usage', message: `${oneLine(msg)} (see \`${help}\`)`, exitCode: EXIT_CODES.USAGE };
  }
  const e = err as { name?: string; message?: unknown; stack?: string; oclif?: { exit?: number } } | undefined;
  if (e?.name === 'ExitPromptError' || e?.name === 'AbortPromptError') {
    return { code: 'interrupted', message: 'interrupted', exitCode: EXIT_CODES.INTERRUPTED };
  }
  if (err instanceof Errors.CLIError) {
    // this.error('...') from a command: a plain failure with oclif's exit code.
    const exit = e?.oclif?.exit;
    return { code: 'failure', message: oneLine(err.message), exitCode: typeof exit === 'number' && exit > 0 ? exit : EXIT_CODES.FAILURE };
  }
  const message = err instanceof Error ? err.message : String(err);
  return {
    code: 'internal',
    message: `internal error: ${oneLine(message) || (e?.name ?? 'unknown')}`,
    hint: 're-run with `-v debug` to see the stack trace, and report it',
    exitCode: EXIT_CODES.FAILURE,
    ...(err instanceof Error && err.stack ? { stack: err.stack } : {}),
  };
}

/** Log level before flags are parsed (errors during parsing): argv, then DM_LOG_LEVEL. */
function earlyLogLevel(argv: string[], env: NodeJS.ProcessEnv): LogLevel {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') break;
    let v: string | undefined;
    if (a === '-v' || a === '--log-level' || a === '--verbose') v = argv[i + 1];
    else if (a.startsWith('--log-level=')) v = a.slice('--log-level='.length);
    else if (a.startsWith('--verbose=')) v = a.slice('--verbose='.length);
    else if (/^-v[a-z]+$/.test(a)) v = a.slice(2);
    if (v && (LOG_LEVELS as readonly string[]).includes(v)) return v as LogLevel;
  }
  const e = env.DM_LOG_LEVEL;
  return e && (LOG_LEVELS as readonly string[]).includes(e) ? (e as LogLevel) : 'warn';
}

function jsonReplacer(_k: string, v: unknown): unknown {
  if (typeof v === 'bigint') return Number.isSafeInteger(Number(v)) ? Number(v) : v.toString();
  return v;
}

export abstract class DmctlCommand extends Command {
  static override enableJsonFlag = true;
  static override baseFlags = globalFlags;

  /** Aborted on SIGINT/SIGTERM; hand it to operations that can stop early. */
  protected readonly abortController = new AbortController();
  private parsedFlags: Record<string, unknown> | undefined;
  private settingsPromise: Promise<RepoSettings> | undefined;
  private progressRenderer: Progress | undefined;
  private loggerInstance: Logger | undefined;
  private interruptHandlers = new Set<InterruptHandler>();
  private interrupting: Promise<void> | undefined;
  private readonly signalListener = (sig: NodeJS.Signals) => {
    void this.onSignal(sig);
  };

  get abortSignal(): AbortSignal {
    return this.abortController.signal;
  }

  /** Set once the command has returned or thrown (its `finally`). */
  private finished = false;
  /**
   * Node exits with status 0 once nothing is left to run, even while the command still awaits a
   * promise that can then never settle. That would report a backup that stopped half way, with no
   * snapshot, as a success. It is a bug whenever it happens; this makes it a failure, said as such.
   */
  private readonly stallListener = () => {
    if (this.finished || this.interrupting) return;
    this.progressRenderer?.stop();
    this.printError(
      describeError(
        new DmctlError('stalled', `internal error: \`${this.id ?? 'dmctl'}\` stopped before it finished: nothing it waited for could happen any more`, {
          hint: 'this is a bug in dmctl, please report it; what the command did not finish was not committed (a backup that stops here writes no snapshot), and a lock it held is left as after a crash',
          exitCode: EXIT_CODES.FAILURE,
        }),
      ),
    );
    process.exit(EXIT_CODES.FAILURE);
  };

  override async init(): Promise<void> {
    await super.init();
    process.on('SIGINT', this.signalListener);
    process.on('SIGTERM', this.signalListener);
    process.on('beforeExit', this.stallListener);
  }

  /** Same as oclif's parse; remembers the flags for settings(), logger and progress. */
  override async parse<F extends FlagOutput, B extends FlagOutput, A extends ArgOutput>(
    options?: Interfaces.Input<F, B, A>,
    argv?: string[],
  ): Promise<Interfaces.ParserOutput<F, B, A>> {
    const out = await super.parse<F, B, A>(options, argv);
    this.parsedFlags = out.flags as Record<string, unknown>;
    return out;
  }

  private async flagValues(): Promise<Record<string, unknown>> {
    if (!this.parsedFlags) await this.parse(this.ctor as unknown as Interfaces.Input<FlagOutput, FlagOutput, ArgOutput>);
    return this.parsedFlags!;
  }

  /** Repository, password and connection options, resolved once (see SETTINGS_RESOLUTION). */
  protected settings(): Promise<RepoSettings> {
    this.settingsPromise ??= this.flagValues().then((f) => resolveSettings(f as RepoFlagValues));
    return this.settingsPromise;
  }

  private logLevel(): LogLevel {
    const f = this.parsedFlags?.['log-level'];
    if (typeof f === 'string' && (LOG_LEVELS as readonly string[]).includes(f)) return f as LogLevel;
    return earlyLogLevel(this.argv, process.env);
  }

  private renderer(): Progress {
    this.progressRenderer ??= createProgress({
      json: this.jsonEnabled(),
      quiet: Boolean(this.parsedFlags?.quiet),
      stream: process.stderr,
    });
    return this.progressRenderer;
  }

  /** A ProgressFn for the core; events without a phase get `phase`. Drawn on stderr. */
  protected progress(phase: string): ProgressFn {
    const r = this.renderer();
    return (ev) => r.update(ev.phase ? ev : { ...ev, phase });
  }

  /** Logger on stderr at the -v/--log-level level (does not tear the progress spinner). */
  protected get logger(): Logger {
    this.loggerInstance ??= createLogger({
      level: this.logLevel(),
      write: (line) => this.renderer().line(line),
      json: this.jsonEnabled() && !process.stderr.isTTY,
      colors: errColors(),
    });
    return this.loggerInstance;
  }

  /** Warnings go to stderr as `warning: ...` lines (JSON lines under --json off a terminal). */
  override warn(input: string | Error): string | Error {
    this.renderer().warn(input instanceof Error ? input.message : input);
    return input;
  }

  /** Prints one Kanister phase-output line on stdout (see src/kanister/output.ts). */
  protected phaseOutput(key: string, value: string): void {
    // Under --json stdout is one JSON document (which holds the same values); Kanister phases
    // read the plain output.
    if (this.jsonEnabled()) return;
    process.stdout.write(phaseOutputLine(key, value));
  }

  /**
   * Registers work to do when SIGINT/SIGTERM arrives (release locks, remove temp files). Returns a
   * function that unregisters it; call that once the guarded work is over.
   */
  protected onInterrupt(handler: InterruptHandler): () => void {
    this.interruptHandlers.add(handler);
    return () => this.interruptHandlers.delete(handler);
  }

  private async onSignal(sig: NodeJS.Signals): Promise<void> {
    if (this.interrupting) {
      // Second signal: do not wait for the clean-up any longer.
      process.exit(EXIT_CODES.INTERRUPTED);
    }
    let resolveDone!: () => void;
    this.interrupting = new Promise<void>((r) => (resolveDone = r));
    const err = new InterruptedError(`interrupted by ${sig}`);
    this.abortController.abort(err);
    this.progressRenderer?.stop();
    const handlers = [...this.interruptHandlers];
    this.interruptHandlers.clear();
    // (a referenced timer: were the clean-up left waiting on nothing, an empty event loop would
    // end the process with status 0 before the exit below; this always ends in process.exit)
    const grace = new Promise<void>((r) => setTimeout(r, INTERRUPT_GRACE_MS));
    // The command's own clean-up first, then any repository lock still held (backup, restore and
    // the others hold theirs inside the operation, whose own release never runs: exit comes first).
    await Promise.race([Promise.allSettled(handlers.map(async (h) => h())).then(() => releaseHeldLocks()), grace]);
    this.printError(describeError(err));
    resolveDone();
    process.exit(EXIT_CODES.INTERRUPTED);
  }

  private printError(rep: ErrorReport): void {
    writeErrorReport(rep, this.jsonEnabled(), this.logLevel() === 'debug');
  }

  override async catch(err: Interfaces.CommandError): Promise<void> {
    // this.exit(n) inside a command: pass through to oclif unchanged.
    if (err instanceof Errors.ExitError) throw err;
    this.progressRenderer?.stop();
    if (this.interrupting) {
      // The signal handler prints and exits once clean-up is done.
      await this.interrupting;
      return;
    }
    const rep = describeError(err, this.id);
    this.printError(rep);
    this.exit(rep.exitCode);
  }

  override async finally(err: Error | undefined): Promise<void> {
    this.finished = true;
    process.off('beforeExit', this.stallListener);
    this.progressRenderer?.stop();
    process.off('SIGINT', this.signalListener);
    process.off('SIGTERM', this.signalListener);
    await super.finally(err);
  }

  /** --json output: plain (uncoloured) JSON on stdout, bigints as numbers. */
  override logJson(json: unknown): void {
    process.stdout.write(JSON.stringify(json, jsonReplacer, 2) + '\n');
  }
}
