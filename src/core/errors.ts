// The one error family of dmctl. Every floor (storage, repository, operations, commands) throws
// DmctlError subclasses; the base command maps them to one line on stderr, an optional hint and
// the exit code from EXIT_CODES. Anything else that escapes is a bug and exits 1.

/** Documented exit codes (README "Exit codes" must list exactly these). */
export const EXIT_CODES = {
  OK: 0,
  /** Generic failure: the command did not do what was asked. */
  FAILURE: 1,
  /** Wrong usage: unknown flag, missing argument, invalid value. */
  USAGE: 2,
  /** Backup finished, but some source files could not be read (snapshot written without them). */
  PARTIAL: 3,
  /** Storage failed: unreachable, access denied, bucket missing, retries exhausted. */
  STORAGE: 4,
  /** Repository data is damaged: MAC/hash mismatch, truncated or missing pack, `check` found errors. */
  DAMAGED: 5,
  /** The command whose output was being stored (backup-stream -- CMD) failed; no snapshot written. */
  SOURCE_COMMAND: 6,
  /** Writing the restore target failed: read-only, disk full, permission denied. */
  TARGET: 7,
  /** No repository at the given location. */
  NO_REPOSITORY: 10,
  /** The repository is locked by another process. */
  LOCKED: 11,
  /** Wrong password: no key file opens with it. */
  WRONG_PASSWORD: 12,
  /** Interrupted by SIGINT/SIGTERM. */
  INTERRUPTED: 130,
} as const;

export type ExitCode = (typeof EXIT_CODES)[keyof typeof EXIT_CODES];

export interface DmctlErrorOptions {
  hint?: string;
  cause?: unknown;
  exitCode?: ExitCode;
}

export class DmctlError extends Error {
  /** Stable, machine-readable identifier (shown under --json). */
  readonly code: string;
  readonly hint?: string;
  readonly exitCode: ExitCode;

  constructor(code: string, message: string, opts: DmctlErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = new.target.name;
    this.code = code;
    this.hint = opts.hint;
    this.exitCode = opts.exitCode ?? EXIT_CODES.FAILURE;
  }

  toJSON(): Record<string, unknown> {
    return { error: this.code, message: this.message, ...(this.hint ? { hint: this.hint } : {}), exitCode: this.exitCode };
  }
}

export class UsageError extends DmctlError {
  constructor(message: string, hint?: string) {
    super('usage', message, { hint, exitCode: EXIT_CODES.USAGE });
  }
}

/** Storage-level failures. `kind` is the one vocabulary every backend maps its provider errors onto. */
export type StorageErrorKind =
  | 'not-found'
  | 'already-exists'
  | 'access-denied'
  | 'bucket-missing'
  | 'unreachable'
  | 'no-space'
  | 'read-only'
  | 'invalid-config'
  | 'other';

export class StorageError extends DmctlError {
  readonly kind: StorageErrorKind;
  constructor(kind: StorageErrorKind, message: string, opts: DmctlErrorOptions = {}) {
    super(`storage-${kind}`, message, { exitCode: EXIT_CODES.STORAGE, ...opts });
    this.kind = kind;
  }
}

export function isNotFound(err: unknown): boolean {
  return err instanceof StorageError && err.kind === 'not-found';
}

export function isAlreadyExists(err: unknown): boolean {
  return err instanceof StorageError && err.kind === 'already-exists';
}

/** A missing or truncated object: damage to that object (and what refers to it), not to the storage. */
export function isObjectDamage(err: unknown): boolean {
  return err instanceof DmctlError && (err.code === 'storage-not-found' || err.code === 'storage-other');
}

/** A storage failure that is not about one object (retries spent, access denied, no space...): the operation ends. */
export function isStorageOutage(err: unknown): boolean {
  return err instanceof DmctlError && err.code.startsWith('storage-') && !isObjectDamage(err);
}

export class NoRepositoryError extends DmctlError {
  constructor(location: string) {
    super('no-repository', `no repository at ${location}`, {
      hint: 'check the location, or create one with `dmctl repo init`',
      exitCode: EXIT_CODES.NO_REPOSITORY,
    });
  }
}

export class WrongPasswordError extends DmctlError {
  constructor() {
    super('wrong-password', 'wrong password: no key in the repository opens with it', {
      hint: 'check --password-file, DM_PASSWORD_FILE, DM_PASSWORD or RESTIC_PASSWORD',
      exitCode: EXIT_CODES.WRONG_PASSWORD,
    });
  }
}

export class LockedError extends DmctlError {
  constructor(message: string, hint = 'wait for the other process, retry with --retry-lock 5m, or remove stale locks with `dmctl unlock`') {
    super('locked', message, { hint, exitCode: EXIT_CODES.LOCKED });
  }
}

/** Damaged repository data: what was damaged is named in the message (pack id, blob id, file). */
export class IntegrityError extends DmctlError {
  constructor(message: string, opts: DmctlErrorOptions = {}) {
    super('damaged', message, { exitCode: EXIT_CODES.DAMAGED, ...opts });
  }
}

export class SourceCommandError extends DmctlError {
  constructor(message: string, hint?: string) {
    super('source-command-failed', message, { hint, exitCode: EXIT_CODES.SOURCE_COMMAND });
  }
}

export class TargetError extends DmctlError {
  constructor(message: string, opts: DmctlErrorOptions = {}) {
    super('target', message, { exitCode: EXIT_CODES.TARGET, ...opts });
  }
}

export class InterruptedError extends DmctlError {
  constructor(message = 'interrupted') {
    super('interrupted', message, { exitCode: EXIT_CODES.INTERRUPTED });
  }
}

/** Short description of a Node system error (ENOSPC, EACCES, EROFS...) for one-line messages. */
export function describeSystemError(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  switch (e?.code) {
    case 'ENOSPC': return 'no space left on device';
    case 'EDQUOT': return 'disk quota exceeded';
    case 'EROFS': return 'read-only file system';
    case 'EACCES': return 'permission denied';
    case 'EPERM': return 'operation not permitted';
    case 'ENOENT': return 'no such file or directory';
    case 'ENOTDIR': return 'not a directory';
    case 'EISDIR': return 'is a directory';
    case 'EEXIST': return 'already exists';
    case 'EIO': return 'input/output error';
    default: return e?.message ?? String(err);
  }
}
