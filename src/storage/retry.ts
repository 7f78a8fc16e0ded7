// The one retry/limit wrapper for every backend: exponential backoff with full jitter for transient
// failures (throttling, 5xx, resets, timeouts), a per-request timeout for stuck requests, a retry
// budget shared by all operations of a backend, and bounded concurrency (a semaphore sized by
// --connections). Providers never retry themselves: they classify (isRetryable) and throw.
import { StorageError, StorageErrorKind } from '../core/errors.js';
import { Backend, FileInfo, FileType, ID_RE } from './backend.js';

/** Optional per-request context providers accept as a trailing argument (abort stuck requests). */
export interface RequestContext {
  signal?: AbortSignal;
}

/** One page of a listing; providers with paged listings implement it so each page is retried alone. */
export interface ListPage {
  items: FileInfo[];
  next?: string;
}

/** What the wrapper may use beyond the Backend interface (all optional). */
export interface ProviderBackend extends Backend {
  listPage?(type: FileType, token: string | undefined, ctx?: RequestContext): Promise<ListPage>;
}

const RETRYABLE = Symbol.for('dmctl.storage.retryable');
const STATUS = Symbol.for('dmctl.storage.status');

/** Builds a StorageError that the retry wrapper will retry (throttling, 5xx, resets). */
export function storageError(
  kind: StorageErrorKind,
  message: string,
  opts: { cause?: unknown; hint?: string; retryable?: boolean; status?: number } = {},
): StorageError {
  const e = new StorageError(kind, message, { cause: opts.cause, hint: opts.hint });
  if (opts.retryable) Object.defineProperty(e, RETRYABLE, { value: true });
  if (opts.status !== undefined) Object.defineProperty(e, STATUS, { value: opts.status });
  return e;
}

const RETRY_CODES = new Set(['ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ECONNREFUSED', 'ECONNABORTED', 'EAI_AGAIN', 'UND_ERR_SOCKET', 'ENETUNREACH', 'EHOSTUNREACH', 'ERR_STREAM_PREMATURE_CLOSE']);
const RETRY_STATUS = new Set([408, 429, 500, 502, 503, 504, 509]);
const TLS_CODES = /^(CERT_|ERR_TLS_|DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_(VERIFY|GET)_|ERR_SSL_)/;

/** HTTP status of a provider error, if it has one (AWS, Azure, GCS, our REST client). */
export function httpStatusOf(err: unknown): number | undefined {
  const e = err as Record<string | symbol, any> | undefined;
  if (!e || typeof e !== 'object') return undefined;
  const s = e[STATUS] ?? e.$metadata?.httpStatusCode ?? e.statusCode ?? e.status ?? (typeof e.code === 'number' ? e.code : undefined) ?? e.response?.status;
  return typeof s === 'number' ? s : undefined;
}

/** Network-level error code (ECONNRESET, ...) anywhere in the cause chain. */
export function netCodeOf(err: unknown): string | undefined {
  for (let e = err as any, depth = 0; e && depth < 6; e = e.cause ?? e.originalError, depth++) {
    if (typeof e.code === 'string' && (RETRY_CODES.has(e.code) || /^E[A-Z]+$/.test(e.code) || TLS_CODES.test(e.code))) return e.code;
    if (typeof e.errno === 'string') return e.errno;
  }
  return undefined;
}

/** True for a transient failure worth retrying: throttling (429, 503 SlowDown), 5xx, resets, timeouts. */
export function isRetryable(err: unknown): boolean {
  if (!err || typeof err !== 'object') return false;
  const e = err as Record<string | symbol, any>;
  if (e[RETRYABLE]) return true;
  if (err instanceof StorageError) return false; // classified by the provider as final
  if (e.name === 'AbortError' || e.name === 'TimeoutError' || e.name === 'RequestTimeout' || e.name === 'SlowDown') return true;
  const st = httpStatusOf(err);
  if (st !== undefined && RETRY_STATUS.has(st)) return true;
  const code = netCodeOf(err);
  if (code && RETRY_CODES.has(code)) return true;
  return /socket hang up|ECONNRESET|ETIMEDOUT|other side closed|premature close/i.test(String(e.message ?? ''));
}

/** Kind + short text for a network-level failure, shared by the providers' error mappers. */
export function describeNetworkError(err: unknown): { kind: StorageErrorKind; text: string; retryable: boolean; hint?: string } | undefined {
  const code = netCodeOf(err);
  const msg = String((err as any)?.message ?? '');
  if (code && TLS_CODES.test(code)) {
    return { kind: 'unreachable', text: `TLS certificate not accepted (${code})`, retryable: false, hint: 'pass the server CA with --cacert, or --insecure-tls for a test server' };
  }
  switch (code) {
    case 'ECONNREFUSED': return { kind: 'unreachable', text: 'connection refused', retryable: true, hint: 'check the endpoint host and port' };
    case 'ENOTFOUND': return { kind: 'unreachable', text: 'host not found', retryable: false, hint: 'check the endpoint host name' };
    case 'EAI_AGAIN': return { kind: 'unreachable', text: 'name resolution failed', retryable: true };
    case 'ECONNRESET': case 'EPIPE': case 'UND_ERR_SOCKET': case 'ECONNABORTED': case 'ERR_STREAM_PREMATURE_CLOSE':
      return { kind: 'unreachable', text: 'connection reset', retryable: true };
    case 'ETIMEDOUT': return { kind: 'unreachable', text: 'connection timed out', retryable: true };
    case 'ENETUNREACH': case 'EHOSTUNREACH': return { kind: 'unreachable', text: 'network unreachable', retryable: true };
  }
  if ((err as any)?.name === 'AbortError' || (err as any)?.name === 'TimeoutError') return { kind: 'unreachable', text: 'request timed out', retryable: true };
  if (/socket hang up|other side closed|premature close/i.test(msg)) return { kind: 'unreachable', text: 'connection reset', retryable: true };
  return undefined;
}

import { Semaphore } from '../core/limit.js';
/** The one semaphore of the project, re-exported for the providers. */
export { Semaphore };

export interface RetryOptions {
  /** Attempts per operation, including the first (default 6). */
  maxAttempts?: number;
  /** First backoff cap in ms (default 200); doubles each retry up to maxDelayMs. */
  baseDelayMs?: number;
  /** Largest backoff in ms (default 15 000). */
  maxDelayMs?: number;
  /** Timeout of one request in ms, plus timeoutPerMiBMs per MiB moved (default 60 000 + 2 000/MiB). 0 = none. */
  requestTimeoutMs?: number;
  timeoutPerMiBMs?: number;
  /** Retries all operations of this backend may spend together before failing fast (default 200). */
  budget?: number;
  /** Concurrent requests (default: the backend's own `connections`). */
  connections?: number;
  /** Called before each retry (for a warning line / progress). */
  onRetry?: (info: { operation: string; attempt: number; delayMs: number; error: unknown }) => void;
  /** Random source in [0,1) for jitter (tests). */
  random?: () => number;
  /** Sleep function (tests). */
  sleep?: (ms: number) => Promise<void>;
}

const defaultSleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms)); // ref'd: a backoff must keep the process alive

/** Shared state of one retry policy (budget, semaphore), usable for calls that are not Backend methods. */
export class RetryPolicy {
  readonly maxAttempts: number;
  readonly baseDelayMs: number;
  readonly maxDelayMs: number;
  readonly requestTimeoutMs: number;
  readonly timeoutPerMiBMs: number;
  private budgetLeft: number;
  private readonly budgetMax: number;
  readonly semaphore: Semaphore;
  private readonly random: () => number;
  private readonly sleep: (ms: number) => Promise<void>;
  private readonly onRetry?: RetryOptions['onRetry'];
  /** Total retries done (for tests and stats). */
  retries = 0;

  constructor(readonly location: string, connections: number, opts: RetryOptions = {}) {
    this.maxAttempts = Math.max(1, opts.maxAttempts ?? 6);
    this.baseDelayMs = opts.baseDelayMs ?? 200;
    this.maxDelayMs = opts.maxDelayMs ?? 15_000;
    this.requestTimeoutMs = opts.requestTimeoutMs ?? 60_000;
    this.timeoutPerMiBMs = opts.timeoutPerMiBMs ?? 2_000;
    this.budgetMax = this.budgetLeft = opts.budget ?? 200;
    this.semaphore = new Semaphore(Math.max(1, opts.connections ?? connections));
    this.random = opts.random ?? Math.random;
    this.sleep = opts.sleep ?? defaultSleep;
    this.onRetry = opts.onRetry;
  }

  /** Backoff before retry number `attempt` (1-based): full jitter in [0, min(max, base*2^(attempt-1))]. */
  delayFor(attempt: number): number {
    const cap = Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** (attempt - 1));
    return Math.floor(this.random() * cap);
  }

  /**
   * Runs `fn` with a concurrency slot, a timeout (abort signal) per attempt and retries on transient
   * failures. `operation` names what is done ("saving data/ab12…") for the final error message.
   */
  async call<T>(operation: string, fn: (ctx: RequestContext) => Promise<T>, bytes = 0, opts: { limit?: boolean } = {}): Promise<T> {
    let attempt = 0;
    for (;;) {
      attempt++;
      let result: T;
      try {
        result = opts.limit === false ? await this.attempt(fn, bytes) : await this.semaphore.run(() => this.attempt(fn, bytes));
        if (this.budgetLeft < this.budgetMax) this.budgetLeft = Math.min(this.budgetMax, this.budgetLeft + 0.1);
        return result;
      } catch (err) {
        if (!isRetryable(err)) throw err;
        if (attempt >= this.maxAttempts || this.budgetLeft < 1) throw this.giveUp(operation, attempt, err);
        this.budgetLeft -= 1;
        this.retries++;
        const delayMs = this.delayFor(attempt);
        this.onRetry?.({ operation, attempt, delayMs, error: err });
        await this.sleep(delayMs);
      }
    }
  }

  private async attempt<T>(fn: (ctx: RequestContext) => Promise<T>, bytes: number): Promise<T> {
    if (!this.requestTimeoutMs) return fn({});
    const ms = this.requestTimeoutMs + Math.ceil((bytes / 1048576) * this.timeoutPerMiBMs);
    const ac = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const e = new Error(`request timed out after ${ms} ms`);
        e.name = 'TimeoutError';
        ac.abort(e);
        reject(e);
      }, ms);
    });
    try {
      // Providers that honour the signal abort the request; for the others the race abandons it.
      return await Promise.race([fn({ signal: ac.signal }), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  private giveUp(operation: string, attempts: number, err: unknown): StorageError {
    const last = err instanceof Error ? err.message : String(err);
    const spent = this.budgetLeft < 1 ? ' (retry budget spent)' : '';
    const kind: StorageErrorKind = err instanceof StorageError ? err.kind : 'unreachable';
    const text = last.startsWith(this.location) ? last.slice(this.location.length).replace(/^:\s*/, '') : last;
    return new StorageError(kind, `${this.location}: ${operation} failed after ${attempts} attempt${attempts === 1 ? '' : 's'}${spent}: ${text}`, {
      cause: err,
      hint: 'the storage service kept failing; check its health and the network, then run the command again (the repository stays consistent)',
    });
  }
}

function what(type: FileType, name: string): string {
  return type === 'config' ? 'config' : `${type}/${name.length > 16 ? name.slice(0, 16) + '…' : name}`;
}

/** A Backend whose every operation goes through a RetryPolicy. */
class RetryingBackend implements Backend {
  readonly location: string;
  readonly connections: number;
  readonly policy: RetryPolicy;

  constructor(readonly inner: ProviderBackend, opts: RetryOptions) {
    this.location = inner.location;
    this.connections = Math.max(1, opts.connections ?? inner.connections);
    this.policy = new RetryPolicy(inner.location, this.connections, opts);
  }

  create(): Promise<void> {
    return this.policy.call('creating the repository layout', (ctx) => (this.inner as any).create(ctx));
  }

  async save(type: FileType, name: string, data: Uint8Array): Promise<void> {
    let failedBefore = false;
    try {
      await this.policy.call(`saving ${what(type, name)}`, async (ctx) => {
        try {
          return await (this.inner as any).save(type, name, data, ctx);
        } catch (err) {
          if (isRetryable(err)) failedBefore = true;
          throw err;
        }
      }, data.length);
    } catch (err) {
      // A request that failed ambiguously (reset, timeout) may still have stored the object; the
      // retry then sees "already exists". If the stored bytes are ours, the save did succeed.
      if (failedBefore && err instanceof StorageError && err.kind === 'already-exists') {
        const stored = await this.load(type, name).catch(() => undefined);
        if (stored && Buffer.compare(stored, Buffer.from(data.buffer, data.byteOffset, data.length)) === 0) return;
      }
      throw err;
    }
  }

  load(type: FileType, name: string, offset?: number, length?: number): Promise<Buffer> {
    return this.policy.call(`loading ${what(type, name)}`, (ctx) => (this.inner as any).load(type, name, offset, length, ctx), length ?? 0);
  }

  get loadInto(): Backend['loadInto'] {
    const inner = this.inner as ProviderBackend & { loadInto?: (type: FileType, name: string, offset: number, dest: Buffer, ctx?: unknown) => Promise<void> };
    if (!inner.loadInto) return undefined;
    return (type, name, offset, dest) => this.policy.call(`loading ${what(type, name)}`, (ctx) => inner.loadInto!(type, name, offset, dest, ctx), dest.length);
  }

  stat(type: FileType, name: string): Promise<FileInfo> {
    return this.policy.call(`stat ${what(type, name)}`, (ctx) => (this.inner as any).stat(type, name, ctx));
  }

  async *list(type: FileType): AsyncIterable<FileInfo> {
    const inner = this.inner;
    if (inner.listPage) {
      let token: string | undefined;
      do {
        const page: ListPage = await this.policy.call(`listing ${type}`, (ctx) => inner.listPage!(type, token, ctx));
        for (const fi of page.items) yield fi;
        token = page.next;
      } while (token);
      return;
    }
    // Unpaged listing: retried as a whole as long as nothing was handed out yet.
    let attempt = 0;
    for (;;) {
      attempt++;
      let yielded = 0;
      try {
        for await (const fi of inner.list(type)) {
          yielded++;
          yield fi;
        }
        return;
      } catch (err) {
        if (yielded > 0 || !isRetryable(err) || attempt >= this.policy.maxAttempts) {
          if (isRetryable(err)) throw this.policy['giveUp'](`listing ${type}`, attempt, err);
          throw err;
        }
        await defaultSleep(this.policy.delayFor(attempt));
      }
    }
  }

  remove(type: FileType, name: string): Promise<void> {
    return this.policy.call(`removing ${what(type, name)}`, (ctx) => (this.inner as any).remove(type, name, ctx));
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

/** Wraps a provider backend with retries, timeouts, a retry budget and bounded concurrency. */
export function withRetry(backend: Backend, opts: RetryOptions = {}): Backend & { readonly policy: RetryPolicy; readonly inner: Backend } {
  return new RetryingBackend(backend as ProviderBackend, opts);
}

/** Filters names that are not restic IDs out of a listing page (shared by providers). */
export function validName(type: FileType, name: string): boolean {
  return type === 'config' ? name === 'config' : ID_RE.test(name);
}
