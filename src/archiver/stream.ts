// backup-stream: stores stdin, or the stdout of a command, as one file in a snapshot, exactly the
// layout `restic backup --stdin --stdin-filename NAME` produces (reference §10.2). If the command
// fails, no snapshot is written.
import { spawn } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { DmctlError, SourceCommandError, UsageError, EXIT_CODES } from '../core/errors.js';
import { ProgressFn, noProgress } from '../core/progress.js';
import { Repository, Compression } from '../repository/repository.js';
import { Node, encodeTree } from '../repository/tree.js';
import { Snapshot, encodeSnapshot } from '../repository/snapshot.js';
import { GoTime, nowGoTime, formatGoTime } from '../repository/gotime.js';
import { sha256hex } from '../repository/crypto.js';
import { RepoLock } from '../repository/lock.js';
import { SealPool } from '../repository/seal-pool.js';
import { currentUsername } from '../repository/key-file.js';
import { saveStream, type ByteSource } from './file-saver.js';
import type { BackupSummary } from './archiver.js';

export interface StreamBackupOptions {
  /** File name inside the snapshot (may contain '/'). */
  name: string;
  /** The data: stdin or any stream. Ignored when `command` is given. */
  input?: ByteSource;
  /** Run this command and store its stdout. */
  command?: string[];
  host?: string;
  tags?: string[];
  time?: GoTime;
  compression?: Compression;
  progress?: ProgressFn;
  retryLockMs?: number;
}

const DIR_MODE = 0x80000000 + 0o755;

export function streamPath(name: string): string {
  const p = path.posix.normalize(`/${name}`);
  if (p === '/' || name.trim() === '') throw new UsageError('--name must name a file', 'for example --name db.sql');
  return p;
}

interface RunningCommand {
  stdout: AsyncIterable<Uint8Array>;
  done: Promise<void>;
}

function runCommand(argv: string[]): RunningCommand {
  const [cmd, ...args] = argv;
  const child = spawn(cmd, args, { stdio: ['inherit', 'pipe', 'inherit'] });
  const done = new Promise<void>((resolve, reject) => {
    child.once('error', (err: NodeJS.ErrnoException) => {
      reject(new SourceCommandError(`cannot run ${cmd}: ${err.code === 'ENOENT' ? 'command not found' : err.message}`, 'check the command after `--`'));
    });
    child.once('close', (code, signal) => {
      if (code === 0) resolve();
      else reject(new SourceCommandError(`${cmd} ${signal ? `was killed by ${signal}` : `exited with status ${code}`}; no snapshot was written`, 'see the command\'s own messages above'));
    });
  });
  // Don't leave an unhandled rejection if the reader fails first.
  done.catch(() => {});
  return { stdout: child.stdout!, done };
}

export async function backupStream(repo: Repository, opts: StreamBackupOptions): Promise<BackupSummary> {
  const started = Date.now();
  const fullPath = streamPath(opts.name);
  const progress = opts.progress ?? noProgress;
  // The early lock (see backup()): stdin is read, chunked and sealed while the lock is checked
  // again; nothing is stored before that check has passed. A command starts only after it.
  // The seal workers start while the lock is taken (see SealPool.prestart).
  SealPool.prestart(repo.key);
  const lock = await RepoLock.acquire(repo, { exclusive: false, retryMs: opts.retryLockMs, loadIndex: progress, early: true }).catch((err: unknown) => {
    SealPool.discardWarm();
    throw err;
  });
  try {
    await repo.ensureIndex(progress);
    const time = opts.time ?? nowGoTime();
    if (opts.command?.length) await lock.confirmed;
    const writer = repo.newWriter({ compression: opts.compression, gate: lock.confirmed, storeCompressedAsIs: true });
    let bytes = 0;
    const onBytes = (n: number) => {
      bytes += n;
      progress({ phase: 'backup', item: fullPath, bytesDone: bytes });
    };
    let saved;
    if (opts.command?.length) {
      const cmd = runCommand(opts.command);
      try {
        saved = await saveStream(writer, repo.config.chunkerPolynomial, cmd.stdout, onBytes);
        await cmd.done;
      } catch (err) {
        await cmd.done.catch(() => {});
        // Let uploads in flight finish (and index them, so a retry dedups) before the lock goes;
        // no snapshot refers to this data, prune reclaims it.
        if (err instanceof SourceCommandError) await writer.flush().catch(() => {});
        throw err;
      }
    } else {
      if (!opts.input) throw new UsageError('no input stream');
      saved = await saveStream(writer, repo.config.chunkerPolynomial, opts.input, onBytes);
    }
    if (saved.size === 0) {
      throw new DmctlError('no-data', 'no data read from the input; no snapshot was written', {
        hint: opts.command ? 'the command wrote nothing to stdout' : 'pipe the data into dmctl, e.g. `pg_dump db | dmctl backup-stream --name db.sql`',
        exitCode: EXIT_CODES.FAILURE,
      });
    }
    const uid = process.getuid?.() ?? 0;
    const gid = process.getgid?.() ?? 0;
    const comps = fullPath.split('/').filter(Boolean);
    const fileName = comps.pop()!;
    let node: Node = {
      name: Buffer.from(fileName),
      type: 'file',
      mode: 0o644,
      mtime: time,
      atime: time,
      ctime: time,
      uid,
      gid,
      size: BigInt(saved.size),
      content: saved.content,
    };
    // Synthetic parent directories for names with '/', as restic creates them.
    let treeId = '';
    for (;;) {
      const buf = encodeTree([node]);
      treeId = sha256hex(buf);
      await writer.save('tree', treeId, buf);
      const dirName = comps.pop();
      if (dirName === undefined) break;
      const now = nowGoTime();
      node = { name: Buffer.from(dirName), type: 'dir', mode: DIR_MODE, mtime: now, atime: now, ctime: now, uid, gid, content: null, subtree: treeId };
    }
    const stats = await writer.flush();
    await lock.confirmed;
    const snap: Snapshot = {
      time,
      tree: treeId,
      paths: [fullPath],
      hostname: opts.host ?? os.hostname(),
      username: currentUsername(),
      uid,
      gid,
      tags: opts.tags?.length ? opts.tags : undefined,
    };
    const snapshotId = await repo.saveUnpacked('snapshots', encodeSnapshot(snap));
    progress({ phase: 'backup', item: fullPath, bytesDone: bytes, done: true });
    return {
      snapshotId,
      shortId: snapshotId.slice(0, 8),
      time: formatGoTime(time),
      paths: [fullPath],
      filesNew: 1,
      filesChanged: 0,
      filesUnmodified: 0,
      dirsNew: 0,
      dirsChanged: 0,
      dirsUnmodified: 0,
      totalFilesProcessed: 1,
      totalBytesProcessed: saved.size,
      dataBlobs: stats.dataBlobs,
      treeBlobs: stats.treeBlobs,
      dataAdded: stats.dataAdded,
      dataAddedPacked: stats.dataAddedPacked,
      packs: stats.packs,
      durationMs: Date.now() - started,
      errors: [],
    };
  } finally {
    SealPool.discardWarm();
    await lock.release();
  }
}
