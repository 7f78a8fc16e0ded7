// Repository locks (reference §12), compatible with restic: files in locks/, unpacked format.
// Acquire: check others, write ours, wait 200 ms, check again; refresh every 5 minutes by writing a
// new lock file and deleting the old one; release by deleting. Stale locks (same host and the process
// is gone, or no refresh for 30 minutes) are ignored when acquiring, and removed by `unlock`.
//
// The 200 ms wait is not wasted: the index can load during it (LockOptions.loadIndex). That is safe
// because our lock file already exists, so no prune can start deleting; one that was already
// running either still holds its lock at the second check (we back off and drop what we read) or
// has finished and replaced index files, which loadIndex notices when it lists them again after
// the check and then loads the index from scratch.
import os from 'node:os';
import { LockedError, isNotFound } from '../core/errors.js';
import type { Repository } from './repository.js';
import { currentUsername } from './key-file.js';
import type { ProgressFn } from '../core/progress.js';
import { localTimestamp } from './time.js';
import { type HeldLock, dropLock, holdLock } from '../core/held-locks.js';

export interface LockInfo {
  time: string;
  exclusive: boolean;
  hostname: string;
  username: string;
  pid: number;
  uid?: number;
  gid?: number;
}

export const STALE_AFTER_MS = 30 * 60 * 1000;
export const REFRESH_EVERY_MS = 5 * 60 * 1000;
const RECHECK_WAIT_MS = 200;

export function encodeLock(l: LockInfo): Buffer {
  const o: Record<string, unknown> = { time: l.time, exclusive: l.exclusive, hostname: l.hostname, username: l.username, pid: l.pid };
  if (l.uid) o.uid = l.uid;
  if (l.gid) o.gid = l.gid;
  return Buffer.from(JSON.stringify(o));
}

export function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export function isStale(l: LockInfo, now = Date.now()): boolean {
  const t = Date.parse(l.time);
  if (!Number.isFinite(t) || now - t > STALE_AFTER_MS) return true;
  if (l.hostname === os.hostname() && l.pid && !processExists(l.pid)) return true;
  return false;
}

export function describeLock(l: LockInfo): string {
  return `${l.exclusive ? 'exclusively ' : ''}by PID ${l.pid} on ${l.hostname} by ${l.username || '?'} since ${l.time}`;
}

export async function loadLocks(repo: Repository, exceptId?: string): Promise<{ id: string; lock?: LockInfo }[]> {
  const out: { id: string; lock?: LockInfo }[] = [];
  const ids: string[] = [];
  for await (const f of repo.backend.list('locks')) if (f.name !== exceptId) ids.push(f.name);
  await Promise.all(
    ids.map(async (id) => {
      try {
        const json = await repo.loadUnpacked('locks', id);
        out.push({ id, lock: JSON.parse(json.toString('utf8')) as LockInfo });
      } catch (err) {
        if (isNotFound(err)) return; // released meanwhile
        out.push({ id }); // undecodable: ignored for conflicts, like restic
      }
    }),
  );
  return out;
}

function conflict(locks: { id: string; lock?: LockInfo }[], exclusive: boolean): LockInfo | undefined {
  for (const { lock } of locks) {
    if (!lock || isStale(lock)) continue;
    if (exclusive || lock.exclusive) return lock;
  }
  return undefined;
}

export interface LockOptions {
  exclusive: boolean;
  /** Keep retrying for this long (ms) while the repository is locked (--retry-lock). */
  retryMs?: number;
  /** Called when refreshing fails (e.g. storage gone); the operation should stop. */
  onLost?: (err: unknown) => void;
  /** Load the repository index while waiting to check the lock again (progress goes here). */
  loadIndex?: ProgressFn;
  /**
   * Return as soon as our lock file is written and the index is loaded, and check the lock again
   * in the background (RepoLock.confirmed). Only read-only work may run before `confirmed`
   * resolves: a writer takes it as its gate. Without --retry-lock only (with it, the classic wait).
   */
  early?: boolean;
}

export class RepoLock {
  private timer?: NodeJS.Timeout;
  private released = false;
  /**
   * Resolves once the lock is known to hold (the check again after 200 ms found no conflict and the
   * index read meanwhile is still current); rejects with a LockedError otherwise. Already resolved
   * unless the lock was taken with `early`.
   */
  confirmed: Promise<void> = Promise.resolve();
  private constructor(
    private readonly repo: Repository,
    public id: string,
    private readonly info: LockInfo,
    private readonly onLost?: (err: unknown) => void,
  ) {
    holdLock(this);
  }

  static async acquire(repo: Repository, opts: LockOptions): Promise<RepoLock> {
    const deadline = Date.now() + (opts.retryMs ?? 0);
    let wait = 1000;
    for (;;) {
      const holder = conflict(await loadLocks(repo), opts.exclusive);
      if (!holder) {
        const info: LockInfo = {
          time: localTimestamp(),
          exclusive: opts.exclusive,
          hostname: os.hostname(),
          username: currentUsername(),
          pid: process.pid,
          uid: process.getuid?.() ?? 0,
          gid: process.getgid?.() ?? 0,
        };
        // From before it is written until the lock object below holds it (or it is removed again),
        // an interrupt removes it: the file exists before saving it has returned.
        const saving = repo.saveUnpacked('locks', encodeLock(info));
        const early: HeldLock = {
          release: async () => {
            const written = await saving.catch(() => undefined);
            if (written) await repo.backend.remove('locks', written).catch(() => {});
          },
        };
        holdLock(early);
        let id: string;
        try {
          id = await saving;
        } catch (err) {
          dropLock(early);
          throw err;
        }
        const written = Date.now();
        const reading = opts.loadIndex ? repo.loadIndex(opts.loadIndex).then(() => undefined, (err: unknown) => err ?? new Error('index load failed')) : undefined;
        if (opts.early && opts.loadIndex && !opts.retryMs && !(await reading)) {
          const l = new RepoLock(repo, id, info, opts.onLost);
          dropLock(early);
          l.confirmed = l.confirm(written, opts.exclusive, opts.loadIndex);
          l.confirmed.catch(() => {}); // observed by the operation's gate and by release()
          return l;
        }
        await Promise.all([new Promise((r) => setTimeout(r, RECHECK_WAIT_MS)), reading]);
        const again = conflict(await loadLocks(repo, id), opts.exclusive);
        if (!again) {
          const l = new RepoLock(repo, id, info, opts.onLost);
          dropLock(early);
          l.schedule();
          if (opts.loadIndex) {
            try {
              // Now under the lock: list again (index files replaced meanwhile make it start over),
              // and if reading failed while unprotected (a file deleted under it), read it all again.
              if (await reading) repo.forgetIndex();
              await repo.loadIndex(opts.loadIndex);
            } catch (err) {
              await l.release();
              throw err;
            }
          }
          return l;
        }
        if (opts.loadIndex) repo.forgetIndex();
        await repo.backend.remove('locks', id).catch(() => {});
        dropLock(early);
        if (Date.now() >= deadline) throw new LockedError(`repository is already locked ${describeLock(again)}`);
      } else if (Date.now() >= deadline) {
        throw new LockedError(`repository is already locked ${describeLock(holder)}`);
      }
      await new Promise((r) => setTimeout(r, Math.min(wait, Math.max(0, deadline - Date.now()))));
      wait = Math.min(wait * 2, 10_000);
    }
  }

  /**
   * Runs work that began before this lock was confirmed. If it fails and the lock's check failed
   * too, the lock's error is the one reported: it explains the failure (a prune deleting what was
   * being read), the work's own error would not.
   */
  async judged<T>(work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (err) {
      await this.confirmed;
      throw err;
    }
  }

  /**
   * The background half of an early acquire: the same check again as the classic path, then the
   * index listed again under the lock. An index file that disappeared means an exclusive operation
   * (a prune) ran and finished in the window; the work started on the old index cannot go on.
   */
  private async confirm(written: number, exclusive: boolean, progress: ProgressFn): Promise<void> {
    await new Promise((r) => setTimeout(r, Math.max(0, RECHECK_WAIT_MS - (Date.now() - written))));
    const again = conflict(await loadLocks(this.repo, this.id), exclusive);
    if (again) {
      this.released = true;
      dropLock(this);
      await this.repo.backend.remove('locks', this.id).catch(() => {});
      throw new LockedError(`repository is already locked ${describeLock(again)}`);
    }
    if (!(await this.repo.loadIndex(progress, { failIfRemoved: true }))) {
      throw new LockedError('the repository was pruned while this operation was starting; nothing was written', 'run it again');
    }
    if (!this.released) this.schedule();
  }

  private schedule(): void {
    this.timer = setTimeout(() => {
      this.refresh().then(
        () => this.schedule(),
        (err) => this.onLost?.(err),
      );
    }, REFRESH_EVERY_MS);
    this.timer.unref();
  }

  /** Writes a fresh lock file (new time, new ID) and removes the previous one. */
  async refresh(): Promise<void> {
    if (this.released) return;
    const info = { ...this.info, time: localTimestamp() };
    const newId = await this.repo.saveUnpacked('locks', encodeLock(info));
    const old = this.id;
    this.id = newId;
    await this.repo.backend.remove('locks', old);
  }

  async release(): Promise<void> {
    // An early lock's check may still be running: let it finish first, so that it neither
    // schedules a refresh nor removes the file after us.
    await this.confirmed.catch(() => {});
    if (this.released) return;
    this.released = true;
    dropLock(this);
    if (this.timer) clearTimeout(this.timer);
    await this.repo.backend.remove('locks', this.id).catch(() => {});
  }
}

/** Removes stale locks (or all with `all`); returns the removed IDs. */
export async function unlock(repo: Repository, all = false): Promise<string[]> {
  const removed: string[] = [];
  for (const { id, lock } of await loadLocks(repo)) {
    if (all || (lock && isStale(lock))) {
      await repo.backend.remove('locks', id);
      removed.push(id);
    }
  }
  return removed;
}
