// restore-stream: writes one file of a snapshot to a stream (stdout) in order, with read-ahead so
// storage latency and decryption overlap with writing. Memory: the read-ahead window only.
import { Writable } from 'node:stream';
import { once } from 'node:events';
import { DmctlError, TargetError, UsageError, describeSystemError } from '../core/errors.js';
import { ProgressFn, noProgress } from '../core/progress.js';
import { Repository } from '../repository/repository.js';
import { Node } from '../repository/tree.js';
import { SnapshotEntry, SnapshotFilter, findSnapshot } from '../repository/snapshots.js';
import { RepoLock } from '../repository/lock.js';
import { treeAt, splitSnapshotSpec } from './restorer.js';

export interface DumpOptions {
  snapshot: string;
  /** Path of the file inside the snapshot ("db.sql" or "/db.sql"); optional when the snapshot holds one file. */
  name?: string;
  filter?: SnapshotFilter;
  output: Writable;
  progress?: ProgressFn;
  retryLockMs?: number;
  /** Blobs loaded ahead of the writer. */
  readAhead?: number;
}

export interface DumpSummary {
  snapshotId: string;
  path: string;
  bytes: number;
  durationMs: number;
}

/** Finds the single file a stream snapshot holds (walking synthetic directories). */
async function soleFile(repo: Repository, tree: string): Promise<{ node: Node; path: string } | undefined> {
  let { nodes } = await treeAt(repo, tree, '/');
  let p = '';
  for (;;) {
    if (nodes.length !== 1) return undefined;
    const n = nodes[0];
    p += `/${n.name.toString()}`;
    if (n.type === 'file') return { node: n, path: p };
    if (n.type !== 'dir') return undefined;
    ({ nodes } = await treeAt(repo, n.subtree!, '/'));
  }
}

/** Writes a file node's content to `out`; blobs are read ahead, nothing is written before `gate`. */
export async function writeFileContent(repo: Repository, node: Node, out: Writable, progress: ProgressFn, readAhead = 8, gate?: Promise<void>): Promise<number> {
  const content = node.content ?? [];
  const pending: Promise<Buffer>[] = [];
  let next = 0;
  let bytes = 0;
  const fill = () => {
    while (next < content.length && pending.length < readAhead) {
      const p = repo.loadBlob('data', content[next++]);
      // A blob read ahead may fail before the writer reaches it: that is reported when awaited
      // below, so it must not count as an unhandled rejection (which kills the process).
      p.catch(() => {});
      pending.push(p);
    }
  };
  fill();
  await gate;
  // Output failures (disk full behind `> file`, reader gone from a pipe) arrive either as a throw
  // from write() (files are written synchronously) or as an 'error' event (pipes): both become one
  // TargetError instead of an uncaught exception with a stack trace.
  let outErr: unknown;
  out.on('error', (err) => {
    outErr ??= err;
  });
  while (pending.length) {
    const buf = await pending.shift()!;
    fill();
    if (outErr) throw outputError(outErr);
    let flowing: boolean;
    try {
      flowing = out.write(buf);
      if (!flowing) await once(out, 'drain');
    } catch (err) {
      throw outputError(outErr ?? err);
    }
    bytes += buf.length;
    progress({ phase: 'restore', bytesDone: bytes });
  }
  // Everything handed to the stream has been written (or has failed) once this callback runs.
  await new Promise<void>((resolve) => out.write(Buffer.alloc(0), () => resolve()));
  if (outErr) throw outputError(outErr);
  return bytes;
}

function outputError(err: unknown): DmctlError {
  if (err instanceof DmctlError) return err;
  const code = (err as NodeJS.ErrnoException).code;
  const why = code === 'EPIPE' ? 'the reading end of the pipe was closed' : describeSystemError(err);
  return new TargetError(`cannot write the output: ${why}`, {
    cause: err,
    hint: code === 'ENOSPC' || code === 'EDQUOT' ? 'free space where the output goes; the repository is unchanged' : undefined,
  });
}

export async function dumpFile(repo: Repository, opts: DumpOptions): Promise<DumpSummary> {
  const started = Date.now();
  const progress = opts.progress ?? noProgress;
  const { id, subpath } = splitSnapshotSpec(opts.snapshot);
  // As restore(): the snapshot is found while the lock is taken, the file's node and its first
  // blobs while the lock is checked again (early lock); no byte goes to the output before that
  // check has passed.
  const found = findSnapshot(repo, id, opts.filter);
  found.catch(() => {});
  const lock = await RepoLock.acquire(repo, { exclusive: false, retryMs: opts.retryLockMs, loadIndex: progress, early: true });
  try {
    await repo.ensureIndex(progress);
    const { snap, node, filePath } = await lock.judged(async () => locateFile(repo, await found, opts, subpath));
    // The first blobs are read while the lock is checked again; writing waits for the verdict.
    const bytes = await writeFileContent(repo, node, opts.output, progress, opts.readAhead, lock.confirmed);
    progress({ phase: 'restore', bytesDone: bytes, done: true });
    return { snapshotId: snap.id, path: filePath, bytes, durationMs: Date.now() - started };
  } finally {
    await lock.release();
  }
}

/** The snapshot's file to dump: --name, the sub-path, or the snapshot's only file. */
async function locateFile(repo: Repository, snap: SnapshotEntry, opts: DumpOptions, subpath: string): Promise<{ snap: SnapshotEntry; node: Node; filePath: string }> {
  const wanted = opts.name ?? (subpath !== '/' ? subpath : undefined);
  if (wanted) {
    const filePath = wanted.startsWith('/') ? wanted : `/${wanted}`;
    const { single } = await treeAt(repo, snap.snapshot.tree, filePath);
    if (!single || single.type !== 'file') throw new UsageError(`${filePath} is not a file in snapshot ${snap.id.slice(0, 8)}`);
    return { snap, node: single, filePath };
  }
  const f = await soleFile(repo, snap.snapshot.tree);
  if (!f) throw new UsageError(`snapshot ${snap.id.slice(0, 8)} holds more than one file`, 'name the file with --name');
  return { snap, node: f.node, filePath: f.path };
}
