import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { withRetry, isRetryable, storageError, Semaphore, RetryPolicy } from '../../src/storage/retry.js';
import { Backend, FileInfo, FileType } from '../../src/storage/backend.js';
import { StorageError } from '../../src/core/errors.js';

/** A scripted in-memory backend: each call consumes the next planned failure (if any). */
class FlakyBackend implements Backend {
  readonly location = 'mem:flaky';
  readonly connections = 3;
  files = new Map<string, Buffer>();
  failures: unknown[] = [];
  calls = 0;
  active = 0;
  maxActive = 0;
  hang = false;
  signals: (AbortSignal | undefined)[] = [];
  private async step(ctx?: { signal?: AbortSignal }): Promise<void> {
    this.calls++;
    this.signals.push(ctx?.signal);
    this.active++;
    this.maxActive = Math.max(this.maxActive, this.active);
    try {
      await new Promise((r) => setTimeout(r, 2));
      if (this.hang) await new Promise((_, rej) => ctx?.signal?.addEventListener('abort', () => rej(Object.assign(new Error('aborted'), { name: 'AbortError' }))));
      const f = this.failures.shift();
      if (f) throw f;
    } finally {
      this.active--;
    }
  }
  async create(): Promise<void> {}
  async save(type: FileType, name: string, data: Uint8Array, ctx?: { signal?: AbortSignal }): Promise<void> {
    await this.step(ctx);
    const k = `${type}/${name}`;
    if (this.files.has(k)) throw new StorageError('already-exists', `${this.location}: saving ${k}: already exists`);
    this.files.set(k, Buffer.from(data));
  }
  async load(type: FileType, name: string, _o?: number, _l?: number, ctx?: { signal?: AbortSignal }): Promise<Buffer> {
    await this.step(ctx);
    const b = this.files.get(`${type}/${name}`);
    if (!b) throw new StorageError('not-found', 'not found');
    return b;
  }
  async stat(type: FileType, name: string, ctx?: { signal?: AbortSignal }): Promise<FileInfo> {
    await this.step(ctx);
    const b = this.files.get(`${type}/${name}`);
    if (!b) throw new StorageError('not-found', 'not found');
    return { name, size: b.length };
  }
  async *list(): AsyncIterable<FileInfo> {}
  async remove(): Promise<void> {}
  async close(): Promise<void> {}
}

const N = 'a'.repeat(64);
const fast = { baseDelayMs: 1, maxDelayMs: 4 };
const reset = () => Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' });
const http = (status: number) => Object.assign(new Error(`HTTP ${status}`), { $metadata: { httpStatusCode: status } });

describe('isRetryable', () => {
  it('classifies throttling, 5xx, resets and timeouts as transient, the rest as final', () => {
    for (const e of [reset(), http(429), http(503), http(500), http(502), Object.assign(new Error('x'), { code: 'ETIMEDOUT' }), new Error('socket hang up'), Object.assign(new Error('t'), { name: 'TimeoutError' }), storageError('unreachable', 'x', { retryable: true })]) {
      assert.equal(isRetryable(e), true, String((e as Error).message));
    }
    for (const e of [http(404), http(403), http(412), new Error('boom'), new StorageError('not-found', 'x'), storageError('access-denied', 'x'), undefined, 'str']) {
      assert.equal(isRetryable(e), false, String((e as Error)?.message ?? e));
    }
  });
});

describe('withRetry', () => {
  it('retries transient failures and succeeds with the same bytes', async () => {
    const inner = new FlakyBackend();
    inner.failures = [reset(), http(503), storageError('unreachable', 'slow down', { retryable: true })];
    const be = withRetry(inner, fast);
    await be.save('data', N, Buffer.from('hello'));
    assert.equal(inner.calls, 4);
    assert.equal(be.policy.retries, 3);
    assert.equal((await be.load('data', N)).toString(), 'hello');
  });

  it('does not retry final errors', async () => {
    const inner = new FlakyBackend();
    inner.failures = [new StorageError('access-denied', 'mem:flaky: loading data/x: access denied')];
    const be = withRetry(inner, fast);
    await assert.rejects(be.load('data', N), (e: unknown) => e instanceof StorageError && e.kind === 'access-denied');
    assert.equal(inner.calls, 1);
  });

  it('gives up after maxAttempts with one line naming backend and operation', async () => {
    const inner = new FlakyBackend();
    inner.failures = Array.from({ length: 10 }, () => storageError('unreachable', 'mem:flaky: stat data/aaaa: server error (HTTP 503)', { retryable: true }));
    const be = withRetry(inner, { ...fast, maxAttempts: 3 });
    await assert.rejects(be.stat('data', N), (e: unknown) => {
      assert.ok(e instanceof StorageError);
      assert.equal(e.kind, 'unreachable');
      assert.equal(e.message, `mem:flaky: stat data/${'a'.repeat(16)}… failed after 3 attempts: stat data/aaaa: server error (HTTP 503)`);
      assert.ok(e.hint);
      return true;
    });
    assert.equal(inner.calls, 3);
  });

  it('stops retrying once the shared budget is spent', async () => {
    const inner = new FlakyBackend();
    inner.failures = Array.from({ length: 50 }, () => reset());
    const be = withRetry(inner, { ...fast, maxAttempts: 10, budget: 4 });
    await assert.rejects(be.stat('data', N), /failed after 5 attempts \(retry budget spent\)/);
    inner.failures = [reset()];
    await assert.rejects(be.stat('data', N), /failed after 1 attempt \(retry budget spent\)/);
  });

  it('aborts a stuck request after the timeout and retries it', async () => {
    const inner = new FlakyBackend();
    inner.hang = true;
    const be = withRetry(inner, { ...fast, maxAttempts: 2, requestTimeoutMs: 30 });
    const t0 = Date.now();
    await assert.rejects(be.stat('data', N), /failed after 2 attempts: request timed out after 30 ms/);
    assert.ok(Date.now() - t0 < 2000);
    assert.ok(inner.signals.every((s) => s?.aborted), 'the provider got an aborted signal');
  });

  it('treats "already exists" after an ambiguous failure as success when the stored bytes are ours', async () => {
    const inner = new FlakyBackend();
    const data = Buffer.from('payload');
    // the first request stored the object but the answer was lost
    inner.failures = [];
    const origSave = inner.save.bind(inner);
    let first = true;
    inner.save = async (type, name, d, ctx) => {
      await origSave(type, name, d, ctx);
      if (first) {
        first = false;
        throw reset();
      }
    };
    const be = withRetry(inner, fast);
    await be.save('data', N, data);
    // but a different content under the same name is still refused
    await assert.rejects(be.save('data', N, Buffer.from('other')), (e: unknown) => e instanceof StorageError && e.kind === 'already-exists');
  });

  it('bounds concurrency to --connections', async () => {
    const inner = new FlakyBackend();
    const be = withRetry(inner, { connections: 2 });
    await Promise.all(Array.from({ length: 12 }, (_, i) => be.save('data', i.toString(16).padStart(64, '0'), Buffer.from([i]))));
    assert.equal(inner.maxActive, 2);
    assert.equal(be.connections, 2);
  });

  it('backoff is full jitter under an exponential cap', () => {
    const p = new RetryPolicy('x', 1, { baseDelayMs: 100, maxDelayMs: 1000, random: () => 0.999999 });
    assert.deepEqual([1, 2, 3, 4, 5, 6].map((a) => p.delayFor(a)), [99, 199, 399, 799, 999, 999]);
    const z = new RetryPolicy('x', 1, { random: () => 0 });
    assert.equal(z.delayFor(3), 0);
  });
});

describe('Semaphore', () => {
  it('hands slots over in order and never exceeds its size', async () => {
    const s = new Semaphore(2);
    let active = 0;
    let peak = 0;
    const order: number[] = [];
    await Promise.all(Array.from({ length: 6 }, (_, i) => s.run(async () => {
      active++;
      peak = Math.max(peak, active);
      await new Promise((r) => setTimeout(r, 5));
      order.push(i);
      active--;
    })));
    assert.equal(peak, 2);
    assert.equal(order.length, 6);
    assert.equal(s.inUse, 0);
  });
});
