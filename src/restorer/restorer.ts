// Restore of a snapshot (or a sub-path of it) into a directory.
// 1. Walk the trees: create directories, symlinks, fifos, devices and empty files; collect regular
//    files with their blobs, in batches. 2. For each batch (while the walk collects the next), group
//    the blobs by pack and read each needed region of a pack once; worker threads verify and decode
//    every blob and write it to every place that needs it, with blocking calls (restore-region.ts),
//    setting each small file's metadata as they create it. 3. Metadata of files of several blobs as
//    they complete, directories last (deepest first) so their times stick.
// A blob that fails verification is never written: the file that needed it is removed and named.
import { lstatSync, mkdirSync, promises as fsp, rmSync, symlinkSync } from 'node:fs';
import path from 'node:path';
import { minimatch } from 'minimatch';
import { DmctlError, IntegrityError, TargetError, UsageError, describeSystemError, isStorageOutage } from '../core/errors.js';
import { mapLimit, Semaphore } from '../core/limit.js';
import { ProgressFn, noProgress } from '../core/progress.js';
import { Repository } from '../repository/repository.js';
import { spoolingOf } from '../storage/backend.js';
import { BlobLocation } from '../repository/index-file.js';
import { Node, decodeTree } from '../repository/tree.js';
import { SnapshotEntry, SnapshotFilter, findSnapshot } from '../repository/snapshots.js';
import { RepoLock } from '../repository/lock.js';
import { masterKeyData, OVERHEAD, openInPlace, sha256hex, type MasterKey } from '../repository/crypto.js';
import { ScratchDecompressor } from '../repository/compression.js';
import { transferable, WarmSlot, WorkerPool, workerCount } from '../core/worker-pool.js';
import { SharedRing } from '../core/shared-ring.js';
import { applyFileMetaSync, applyMetadata, fileMeta, linkTargetBytes, makeSpecial, type FileMeta } from './fsmeta.js';
import { createSized, createWhole, restoreRegion, type RegionBlob, type RegionJob, type RegionResult } from './restore-region.js';

export interface RestoreOptions {
  /** ID, prefix or "latest", optionally followed by ":SUBPATH". */
  snapshot: string;
  filter?: SnapshotFilter;
  target: string;
  include?: string[];
  exclude?: string[];
  verify?: boolean;
  progress?: ProgressFn;
  retryLockMs?: number;
  noLock?: boolean;
  /**
   * Nothing in the target is created before this resolves (an early lock's confirmation): the
   * walk goes on meanwhile, its directories are queued and made, in order, when it resolves.
   */
  gate?: Promise<void>;
}

export interface RestoreSummary {
  snapshotId: string;
  target: string;
  files: number;
  dirs: number;
  others: number;
  bytes: number;
  verified?: number;
  errors: { path: string; message: string }[];
  durationMs: number;
}

interface FileJob {
  path: Buffer;
  /**
   * What the file's metadata needs: the plain values, or the whole node when it has extended
   * attributes. Not the node itself otherwise: three batches of decoded nodes were most of the
   * main thread's live heap.
   */
  meta: FileMeta;
  xattrNode?: Node;
  /** Blob ID at each position of the file, with its plaintext length. */
  blobs: { id: string; offset: number; size: number }[];
  remaining: number;
  /** A file of several blobs exists at its full size (parts are written into it). */
  created?: boolean;
  failed?: string;
  size: number;
  /** Something was written to the target file (so an unfinished file must be removed). */
  started?: boolean;
}

interface Use {
  job: FileJob;
  offset: number;
}

const HOLE_MERGE = 1024 * 1024;
/**
 * Regions are read into one shared ring the workers decode from (nothing allocated per region:
 * fresh 16 MiB buffers per read were a third of a restore's peak memory and its page faults). A
 * region is at most `regionMax` bytes unless a single blob is larger; one larger than half the ring
 * gets a buffer of its own.
 *
 * Remote storage: 4 MiB regions (a request's latency each) and a 24 MiB ring, room for several
 * requests in flight. A local repository: 1 MiB regions in a 6 MiB ring. A read there is a system
 * call, and two at a time keep the workers busy; on the bench tree (into tmpfs, alternating runs)
 * the peak went from 314-316 MB to 272-274 MB in the same time (2.0-2.1 s), and a 300 MB random
 * file restored as fast with its 3-8 MiB blobs in buffers of their own.
 */
const REMOTE_READS = { regionMax: 4 * 1024 * 1024, ring: 24 * 1024 * 1024 };
const LOCAL_READS = { regionMax: 1024 * 1024, ring: 6 * 1024 * 1024 };
/** Files (or bytes of content) collected before their data is restored. */
const BATCH_FILES = 4000;
const BATCH_BYTES = 512 * 1024 * 1024;
/** Directories whose trees are loaded ahead of the walk. */
const TREE_PREFETCH = 16;

export function splitSnapshotSpec(spec: string): { id: string; subpath: string } {
  const i = spec.indexOf(':');
  if (i < 0) return { id: spec, subpath: '/' };
  return { id: spec.slice(0, i), subpath: path.posix.normalize(`/${spec.slice(i + 1)}`) };
}

function joinPath(dir: Buffer, name: Buffer): Buffer {
  return Buffer.concat([dir, Buffer.from('/'), name]);
}

/** Loads the tree at `subpath` of a snapshot; returns the node list of that directory (or a single node). */
export async function treeAt(repo: Repository, root: string, subpath: string): Promise<{ nodes: Node[]; single?: Node }> {
  let nodes = decodeTree(await repo.loadBlob('tree', root));
  const comps = subpath.split('/').filter(Boolean);
  for (let i = 0; i < comps.length; i++) {
    const n = nodes.find((x) => x.name.toString() === comps[i]);
    if (!n) throw new UsageError(`path ${subpath} is not in the snapshot`);
    if (n.type !== 'dir') {
      if (i === comps.length - 1) return { nodes: [n], single: n };
      throw new UsageError(`path ${subpath} is not in the snapshot`);
    }
    nodes = decodeTree(await repo.loadBlob('tree', n.subtree!));
  }
  return { nodes };
}

interface PackEntry {
  id: string;
  loc: BlobLocation;
  uses: Use[];
}

/** A part of a pack read with one request: blobs close together (holes up to HOLE_MERGE), at most regionMax. */
interface Region {
  packId: string;
  start: number;
  end: number;
  items: PackEntry[];
}

function regionsOf(packId: string, blobs: Map<string, PackEntry>, regionMax: number): Region[] {
  const entries = [...blobs.values()].sort((a, b) => a.loc.offset - b.loc.offset);
  const regions: Region[] = [];
  for (const e of entries) {
    const r = regions[regions.length - 1];
    if (r && e.loc.offset - r.end <= HOLE_MERGE && e.loc.offset + e.loc.length - r.start <= regionMax) {
      r.end = Math.max(r.end, e.loc.offset + e.loc.length);
      r.items.push(e);
    } else regions.push({ packId, start: e.loc.offset, end: e.loc.offset + e.loc.length, items: [e] });
  }
  return regions;
}

/**
 * The worker threads of a restore's data phase and of restore-stream (restore-worker.ts), one per
 * core; undefined where they cannot start (the caller then decodes on this thread).
 */
export function restoreWorkers(key: MasterKey): WorkerPool | undefined {
  const size = workerCount();
  return warmRestoreWorkers.take([key, size]) ?? startRestoreWorkers(key, size);
}

function startRestoreWorkers(key: MasterKey, size: number): WorkerPool | undefined {
  try {
    // A small young generation: a worker's objects are short-lived, and V8's default semi-spaces
    // cost ~30 MB per worker for nothing (measured: 43 MB heap → 15 MB, same speed).
    return new WorkerPool(new URL('./restore-worker.js', import.meta.url), size, masterKeyData(key), { maxYoungGenerationSizeMb: 4 });
  } catch {
    return undefined;
  }
}

const warmRestoreWorkers = new WarmSlot<WorkerPool>();

/**
 * Starts the workers of the next restoreWorkers(key) now (see WarmSlot): a restore or dump calls
 * this while it waits for the lock and the index. Returns the pool restoreWorkers(key) will hand out.
 */
export function prestartRestoreWorkers(key: MasterKey, unusedMs = 30_000): WorkerPool | undefined {
  const size = workerCount();
  const pool = startRestoreWorkers(key, size);
  return pool && warmRestoreWorkers.put([key, size], pool, unusedMs);
}

/** Stops the workers prestartRestoreWorkers() started if nobody took them. */
export function discardRestoreWorkers(): void {
  warmRestoreWorkers.discard();
}

function plainSize(loc: BlobLocation): number {
  return loc.uncompressedLength || loc.length - OVERHEAD;
}

export class Restorer {
  private readonly progress: ProgressFn;
  readonly errors: { path: string; message: string }[] = [];
  private files = 0;
  private dirs = 0;
  private others = 0;
  private bytes = 0;
  private jobs: FileJob[] = [];
  /** Region jobs in flight: bounded, so memory is a few regions whatever the snapshot's size. */
  private writeSlots = new Semaphore(2);
  /** Worker threads of the data phase (restore-worker.ts); null until started, undefined where none can run. */
  private pool: WorkerPool | undefined | null = null;
  private scratch: ScratchDecompressor | undefined;
  private batchBytes = 0;
  /** The data phases of the batches handed out so far (settles once all of them have). */
  private batchDone: Promise<void> = Promise.resolve();
  /** Resolves once the last batch handed out has dispatched all its regions to the workers. */
  private batchDispatched: Promise<void> = Promise.resolve();
  /** The first batch failure, thrown by the next flush (the walk stops there). */
  private batchFailure: unknown;
  private verified = 0;
  private readonly dirMeta: { path: Buffer; node: Node; depth: number }[] = [];
  private readonly hardlinks = new Map<string, Buffer>();
  private readonly pendingLinks: { path: Buffer; to: Buffer; node: Node }[] = [];
  private readonly owner = process.getuid?.() === 0;
  /** First fatal error of the data phase (target full or read-only): the other workers stop. */
  private abortErr: unknown;
  /** Set once the gate has opened and the target exists; directories wait in `queuedDirs` until then. */
  private open?: Promise<void>;
  private isOpen = false;
  private queuedDirs: Buffer[] = [];
  private queuedSpecials: { p: Buffer; node: Node }[] = [];
  private target = Buffer.alloc(0);

  constructor(
    private readonly repo: Repository,
    private readonly opts: RestoreOptions,
  ) {
    this.progress = opts.progress ?? noProgress;
  }

  private selected(snapPath: string, isDir: boolean, parentIncluded = false): 'yes' | 'no' | 'descend' {
    const { include, exclude } = this.opts;
    if (exclude?.length) {
      for (const p of exclude) if (minimatch(snapPath, p, { dot: true }) || minimatch(path.posix.basename(snapPath), p, { dot: true })) return 'no';
    }
    if (parentIncluded || !include?.length) return 'yes';
    for (const p of include) {
      if (minimatch(snapPath, p, { dot: true }) || minimatch(path.posix.basename(snapPath), p, { dot: true })) return 'yes';
      if (isDir && minimatch(snapPath, p, { dot: true, partial: true })) return 'descend';
    }
    return isDir ? 'descend' : 'no';
  }

  private fail(p: Buffer, err: unknown): void {
    const message = err instanceof DmctlError ? err.message : describeSystemError(err);
    this.errors.push({ path: p.toString(), message });
    this.progress({ phase: 'restore', warning: `${p.toString()}: ${message}` });
  }

  private targetError(p: Buffer, err: unknown): never {
    const code = (err as NodeJS.ErrnoException).code;
    throw new TargetError(`cannot write ${p.toString()}: ${describeSystemError(err)}`, {
      cause: err,
      hint: code === 'ENOSPC' ? 'free space on the target or restore elsewhere; the repository is unchanged' : 'check the target directory and its permissions',
    });
  }

  private readonly treeLoads = new Map<string, Promise<Node[]>>();
  private readonly treeSlots = new Semaphore(8);

  /** Loads and decodes a tree once; a load started ahead is picked up (and forgotten) by its user. */
  private loadTree(id: string): Promise<Node[]> {
    let p = this.treeLoads.get(id);
    if (p) {
      this.treeLoads.delete(id);
      return p;
    }
    p = this.treeSlots.run(() => this.repo.loadBlob('tree', id)).then((b) => decodeTree(b));
    this.treeLoads.set(id, p);
    return p;
  }

  /** Walks a tree, creating everything but file data. `snapDir` is the path inside the snapshot. */
  private async walk(nodes: Node[], dir: Buffer, snapDir: string, depth: number, all: boolean): Promise<void> {
    // Sub-trees are loaded ahead (a window of directories, a few requests at a time): one request
    // after another is what made restores from remote storage slow.
    const dirs = nodes.filter((n) => n.type === 'dir' && n.subtree).map((n) => n.subtree!);
    let ahead = 0;
    const prefetch = (upTo: number) => {
      for (; ahead < Math.min(upTo, dirs.length); ahead++) void this.loadTree(dirs[ahead]).catch(() => {});
    };
    prefetch(TREE_PREFETCH);
    let seenDirs = 0;
    for (const node of nodes) {
      if (node.type === 'dir' && node.subtree) prefetch(++seenDirs + TREE_PREFETCH);
      const snapPath = snapDir === '/' ? `/${node.name.toString()}` : `${snapDir}/${node.name.toString()}`;
      // Inside an included directory everything is included, but excludes still apply at every depth.
      const sel = all && !this.opts.exclude?.length ? 'yes' : this.selected(snapPath, node.type === 'dir', all);
      if (sel === 'no') continue;
      const p = joinPath(dir, node.name);
      if (node.type === 'dir') {
        if (sel === 'descend') {
          const children = await this.loadTree(node.subtree!);
          // create lazily only if something inside is selected: create now, cheap, remove nothing
          this.mkdir(p);
          await this.walk(children, p, snapPath, depth + 1, false);
          this.dirMeta.push({ path: p, node, depth });
          continue;
        }
        this.mkdir(p);
        this.dirs++;
        if (node.subtree) await this.walk(await this.loadTree(node.subtree), p, snapPath, depth + 1, true);
        this.dirMeta.push({ path: p, node, depth });
      } else if (node.type === 'file') {
        this.addFile(p, node);
        if (this.jobs.length >= BATCH_FILES || this.batchBytes >= BATCH_BYTES) await this.flushBatch();
      } else {
        await this.special(p, node);
      }
    }
  }

  /**
   * Waits for the gate, then creates the target and the directories the walk queued meanwhile.
   * Everything that changes the target (files, links, special nodes) comes after this.
   */
  private opened(): Promise<void> {
    this.open ??= (async () => {
      await this.opts.gate;
      try {
        await mkdirAll(this.target.toString());
      } catch (err) {
        this.targetError(this.target, err);
      }
      this.isOpen = true;
      const dirs = this.queuedDirs;
      this.queuedDirs = [];
      for (const d of dirs) this.mkdir(d);
      const specials = this.queuedSpecials;
      this.queuedSpecials = [];
      for (const { p, node } of specials) await this.special(p, node);
    })();
    return this.open;
  }

  /** Directories and symlinks are made with blocking calls: each is microseconds of kernel work. */
  private mkdir(p: Buffer): void {
    if (!this.isOpen) {
      this.queuedDirs.push(p);
      return;
    }
    try {
      mkdirSync(p, { mode: 0o700 });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') {
        if (lstatSync(p).isDirectory()) return;
        rmSync(p, { force: true });
        return this.mkdir(p);
      }
      this.targetError(p, err);
    }
  }

  private async special(p: Buffer, node: Node): Promise<void> {
    if (!this.isOpen) {
      // made when the target opens, after the directories queued before it (symlinks are common
      // enough in a tree that waiting here would stop the walk at the first one)
      this.queuedSpecials.push({ p, node });
      return;
    }
    try {
      if (node.type === 'symlink') {
        const create = () => symlinkSync(linkTargetBytes(node.linktarget ?? Buffer.alloc(0)), p);
        try {
          create();
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
          rmSync(p, { force: true });
          create();
        }
        if (node.extendedAttributes?.length) await applyMetadata(p, node, { owner: this.owner });
        else applyFileMetaSync(p, fileMeta(node), this.owner, true);
      } else {
        // fifos and devices are made by a child process that cannot report EEXIST: clear first
        await fsp.rm(p, { force: true }).catch(() => {});
        await makeSpecial(p, node);
        await applyMetadata(p, node, { owner: this.owner });
      }
      this.others++;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOSPC' || code === 'EROFS') this.targetError(p, err);
      this.fail(p, err);
    }
  }

  private addFile(p: Buffer, node: Node): void {
    const content = node.content ?? [];
    if (node.links && node.links > 1n && node.inode) {
      const key = `${node.deviceId ?? 0n}:${node.inode}`;
      const first = this.hardlinks.get(key);
      if (first) {
        this.pendingLinks.push({ path: p, to: first, node });
        return;
      }
      this.hardlinks.set(key, p);
    }
    const blobs: FileJob['blobs'] = [];
    let off = 0;
    for (const id of content) {
      const loc = this.repo.index.lookup('data', id);
      const size = loc ? plainSize(loc) : 0;
      blobs.push({ id, offset: off, size });
      off += size;
    }
    this.jobs.push({ path: p, meta: fileMeta(node), xattrNode: node.extendedAttributes?.length ? node : undefined, blobs, remaining: blobs.length, size: off });
    this.batchBytes += off;
  }

  private async finishJob(job: FileJob): Promise<void> {
    try {
      if (job.failed) {
        await fsp.rm(job.path, { force: true }).catch(() => {});
        return;
      }
      if (job.xattrNode) await applyMetadata(job.path, job.xattrNode, { owner: this.owner });
      else applyFileMetaSync(job.path, job.meta, this.owner);
      this.files++;
    } catch (err) {
      this.fail(job.path, err);
    }
  }

  private async jobBlobDone(job: FileJob): Promise<void> {
    if (--job.remaining === 0) await this.finishJob(job);
  }

  /**
   * The data phase of one batch: `dispatched` is called once every region is handed out (the next
   * batch may start dispatching then), and the returned promise settles when this batch's writes have.
   */
  private async restoreData(jobs: FileJob[], dispatched: () => void): Promise<void> {
    const batchWrites = new Set<Promise<void>>();
    try {
      await this.dispatchData(jobs, batchWrites);
    } finally {
      dispatched();
    }
    await Promise.all(batchWrites);
    if (this.abortErr) throw this.abortErr;
  }

  private async dispatchData(jobs: FileJob[], batchWrites: Set<Promise<void>>): Promise<void> {
    this.startWorkers();
    // Packs are read while the lock is still being checked again (reading changes nothing); the
    // target is touched only once it has opened.
    const empty: FileJob[] = [];
    const byPack = new Map<string, Map<string, PackEntry>>();
    for (const job of jobs) {
      if (job.blobs.length === 0) {
        empty.push(job);
        continue;
      }
      for (const b of job.blobs) {
        const loc = this.repo.index.lookup('data', b.id);
        if (!loc) {
          job.failed = `data blob ${b.id.slice(0, 10)} is not in the index`;
          continue;
        }
        let m = byPack.get(loc.packId);
        if (!m) byPack.set(loc.packId, (m = new Map()));
        let e = m.get(b.id);
        if (!e) m.set(b.id, (e = { id: b.id, loc, uses: [] }));
        e.uses.push({ job, offset: b.offset });
      }
    }
    const unindexed = async () => {
      await this.opened();
      for (const job of empty) {
        try {
          createWhole(job.path, Buffer.alloc(0));
        } catch (err) {
          this.targetError(job.path, err);
        }
        await this.finishJob(job);
      }
      for (const job of jobs) {
        if (job.failed && job.blobs.length) {
          this.fail(job.path, new IntegrityError(job.failed, { hint: 'run `dmctl check`' }));
          // blobs of this job that are in the index still arrive; the job is removed when they do.
          const known = job.blobs.filter((b) => this.repo.index.lookup('data', b.id)).length;
          job.remaining = known;
          if (known === 0) await this.finishJob(job);
        }
      }
    };
    // Regions of every pack, in pack order, read a few at a time (regions of one pack too: a pack's
    // data in 4 MiB regions one after another was a request's latency each on remote storage).
    const regions = [...byPack.entries()].flatMap(([packId, blobs]) => regionsOf(packId, blobs, this.reads.regionMax));
    // Local reads: two at a time is enough to keep both cores busy; remote ones hide latency.
    const reading = mapLimit(regions, spoolingOf(this.repo.backend) ? 2 : Math.max(2, Math.min(4, this.repo.backend.connections)), async (r) => {
      // After a fatal error (target full, read-only) every worker stops, so the clean-up in run()
      // does not race with writes still going on.
      if (this.abortErr) return;
      try {
        await this.restoreRegionOf(r, batchWrites);
      } catch (err) {
        this.abortErr ??= err;
      }
    });
    const [a, b] = await Promise.allSettled([unindexed(), reading]);
    if (a.status === 'rejected') throw a.reason;
    if (b.status === 'rejected') throw b.reason;
  }

  private async restoreRegionOf(r: Region, batchWrites: Set<Promise<void>>): Promise<void> {
    const packId = r.packId;
    let buf: Buffer | undefined;
    let release: (() => void) | undefined;
    try {
      ({ buf, release } = await this.readRegion(packId, r.start, r.end - r.start));
    } catch (err) {
      await this.opened(); // (a read failed before the lock's check: a prune may explain it)
      // A storage that stays unavailable (retries spent, access denied...) ends the restore; a
      // missing or truncated pack is damage to this pack's files only.
      if (isStorageOutage(err)) throw err;
      if (r.items.length === 1) {
        await this.damaged(packId, r.items[0]!.uses, err);
        return;
      }
      // The merged read failed (e.g. the pack is truncated behind some blob): blobs of the region
      // that are intact must still be restored, so read each one on its own.
      for (const e of r.items) {
        let raw: Buffer;
        try {
          raw = await this.repo.backend.load('data', packId, e.loc.offset, e.loc.length);
        } catch (e2) {
          if (isStorageOutage(e2)) throw e2;
          await this.damaged(packId, e.uses, e2);
          continue;
        }
        await this.dispatch(packId, raw, e.loc.offset, [e], batchWrites);
      }
      return;
    }
    try {
      await this.opened();
      await this.dispatch(packId, buf, r.start, r.items, batchWrites, release);
    } catch (err) {
      // A target error before the region went to a worker (creating a file failed): the ring
      // space must not stay held, or regions waiting for it would never end the restore.
      release?.();
      throw err;
    }
  }

  private ring: SharedRing | undefined;
  /** Region and ring sizes for this repository's storage. */
  private get reads(): typeof LOCAL_READS {
    return spoolingOf(this.repo.backend) ? LOCAL_READS : REMOTE_READS;
  }

  /**
   * Reads a region into the shared ring (held until `release`), or into a buffer of its own when
   * it is too large for the ring. A failed read holds nothing.
   */
  private async readRegion(packId: string, start: number, length: number): Promise<{ buf: Buffer; release?: () => void }> {
    const backend = this.repo.backend;
    if (length > this.reads.ring / 2) return { buf: await backend.load('data', packId, start, length) };
    this.ring ??= new SharedRing(this.reads.ring);
    const ring = this.ring;
    const at = await ring.take(length);
    // Once only: the offset may be taken again by another region as soon as it is released.
    let held = true;
    const release = () => {
      if (held) ring.release(at);
      held = false;
    };
    const buf = ring.bytes.subarray(at, at + length);
    try {
      if (backend.loadInto) await backend.loadInto('data', packId, start, buf);
      else buf.set(await backend.load('data', packId, start, length));
    } catch (err) {
      release();
      throw err;
    }
    return { buf, release };
  }

  /** Marks the files that needed a blob that cannot be read or verified. */
  private async damaged(packId: string, uses: Use[], err: unknown): Promise<void> {
    for (const use of uses) {
      if (!use.job.failed) {
        use.job.failed = 'damaged';
        const msg = err instanceof Error ? err.message : String(err);
        this.fail(use.job.path, new IntegrityError(`pack ${packId.slice(0, 10)}: ${msg}`));
      }
      await this.jobBlobDone(use.job);
    }
  }

  /**
   * Hands a read region to a worker (or restores it here where none runs) without waiting for it:
   * the next region is read meanwhile. Files of several blobs are created at their size first.
   */
  private async dispatch(packId: string, data: Buffer, start: number, items: PackEntry[], batchWrites: Set<Promise<void>>, release?: () => void): Promise<void> {
    const blobs: RegionBlob[] = [];
    const uses: Use[][] = [];
    for (const e of items) {
      const targets: RegionBlob['targets'] = [];
      for (const use of e.uses) {
        const job = use.job;
        if (job.blobs.length > 1 && !job.created) {
          try {
            createSized(job.path, job.size);
          } catch (err) {
            this.targetError(job.path, err);
          }
          job.created = true;
          job.started = true;
        }
        targets.push({
          path: job.path,
          offset: use.offset,
          // Whole files get their metadata in the same pass, unless extended attributes need the async path.
          whole: job.blobs.length === 1 ? { meta: job.xattrNode ? undefined : job.meta } : undefined,
        });
      }
      blobs.push({ id: e.id, at: e.loc.offset - start, length: e.loc.length, uncompressedLength: e.loc.uncompressedLength ?? 0, targets });
      uses.push(e.uses);
    }
    await this.writeSlots.acquire();
    const task = this.runRegion(packId, start, data, blobs)
      .then((res) => this.regionDone(packId, res, uses))
      .catch((err) => {
        this.abortErr ??= err;
      })
      .finally(() => {
        release?.();
        this.writeSlots.release();
        batchWrites.delete(task);
      });
    batchWrites.add(task);
  }

  private startWorkers(): void {
    if (this.pool !== null) return;
    this.pool = restoreWorkers(this.repo.key);
    // One region per worker in flight (the next ones are read meanwhile).
    if (this.pool) this.writeSlots = new Semaphore(this.pool.size);
  }

  private async runRegion(packId: string, start: number, data: Buffer, blobs: RegionBlob[]): Promise<RegionResult> {
    const owner = this.owner;
    if (this.pool) {
      const shared = data.buffer instanceof SharedArrayBuffer;
      const { buf, moved } = shared ? { buf: data.buffer, moved: false } : transferable(data);
      try {
        const job: RegionJob = shared ? { packId, buf, base: data.byteOffset, size: data.length, blobs, owner } : { packId, buf, blobs, owner };
        return await this.pool.run<RegionResult>(job, moved ? [buf as ArrayBuffer] : []);
      } catch {
        // The worker failed (damage is an answer, not an error): restore here from now on, reading
        // the region again (the worker may have decrypted part of it in place, or has its buffer).
        this.pool = undefined;
        const fresh = await this.repo.backend.load('data', packId, start, blobs.reduce((m, b) => Math.max(m, b.at + b.length), 0));
        if (shared) data.set(fresh);
        else data = fresh;
      }
    }
    this.scratch ??= new ScratchDecompressor();
    const scratch = this.scratch;
    const job: RegionJob = { packId, buf: data.buffer, base: data.byteOffset, size: data.length, blobs, owner };
    return restoreRegion(this.repo.key, job, { open: openInPlace, decompress: (d, what) => scratch.decompress(d, what), sha256hex });
  }

  /** Accounts for a region's outcome: files done, metadata errors, damaged blobs, a fatal write error. */
  private async regionDone(packId: string, res: RegionResult, uses: Use[][]): Promise<void> {
    this.bytes += res.bytes;
    const damaged = new Map(res.damaged.map((d) => [d.blob, d.message]));
    const metaErr = new Map(res.metaErrors.map((m) => [`${m.blob}/${m.target}`, m.message]));
    // With a fatal write, the targets before it (in its blob too) were written; nothing after it.
    const blobsSeen = res.fatal ? res.fatal.blob + 1 : uses.length;
    for (let i = 0; i < blobsSeen; i++) {
      const msg = damaged.get(i);
      if (msg !== undefined) {
        await this.damaged(packId, uses[i]!, new IntegrityError(msg));
        continue;
      }
      const targets = res.fatal && i === res.fatal.blob ? res.fatal.target : uses[i]!.length;
      for (let t = 0; t < targets; t++) {
        const job = uses[i]![t]!.job;
        if (job.blobs.length > 1) {
          await this.jobBlobDone(job);
          continue;
        }
        job.remaining = 0;
        const err = metaErr.get(`${i}/${t}`);
        if (err !== undefined) this.fail(job.path, new TargetError(err));
        else if (!job.xattrNode) this.files++;
        else await this.finishJob(job);
      }
    }
    if (res.fatal) {
      const job = uses[res.fatal.blob]![res.fatal.target]!.job;
      this.targetError(job.path, Object.assign(new Error(res.fatal.message), { code: res.fatal.code }));
    }
    this.progress({ phase: 'restore', filesDone: this.files, bytesDone: this.bytes });
  }

  /**
   * After a fatal error in the data phase: removes every file that was begun but not finished, so
   * no file with missing (zero-filled) content is left looking complete in the target.
   */
  private async removeUnfinished(jobs: FileJob[]): Promise<void> {
    for (const job of jobs) {
      if (!job.started || job.remaining === 0) continue;
      await fsp.rm(job.path, { force: true }).catch(() => {});
    }
  }

  /**
   * Starts restoring the data of the files collected so far and forgets them, so the walk goes on
   * collecting the next batch meanwhile (the data phase runs in worker threads). One batch at a time
   * hands out its regions; the previous one's last regions may still be in the workers then.
   * Batching keeps memory bounded by three batches' file lists (regions in flight are bounded by the
   * workers), not by the number of files in the snapshot. Files are collected in tree order, which is
   * the order backups wrote their blobs, so batches mostly touch different packs.
   */
  private async flushBatch(): Promise<void> {
    // (The target opens once the lock's check has passed; the batch's packs may be read before.)
    // The previous batch must have handed out its regions (not finished them: its last regions are
    // written while this batch's first ones are read, so the workers do not drain between batches).
    await this.batchDispatched;
    if (this.batchFailure) throw this.batchFailure;
    const jobs = this.jobs;
    if (!jobs.length) return void (await this.opened());
    this.jobs = [];
    this.batchBytes = 0;
    let dispatched!: () => void;
    this.batchDispatched = new Promise<void>((r) => (dispatched = r));
    const mine = (async () => {
      try {
        await this.restoreData(jobs, dispatched);
      } catch (err) {
        this.batchFailure ??= err;
        await this.removeUnfinished(jobs);
        throw err;
      }
      // (not `this.verified += await …`: that reads the count before the await, and batches
      // verified at the same time overwrote each other's counts)
      if (this.opts.verify) {
        const n = await this.verify(jobs);
        this.verified += n;
      }
    })();
    // Settles when every batch so far has; the first failure is the one reported.
    const before = this.batchDone;
    this.batchDone = Promise.allSettled([before, mine]).then(([a, b]) => {
      if (a.status === 'rejected') throw a.reason;
      if (b.status === 'rejected') throw b.reason;
    });
    this.batchDone.catch(() => {});
  }

  private async links(): Promise<void> {
    for (const l of this.pendingLinks) {
      try {
        await fsp.rm(l.path, { force: true }).catch(() => {});
        await fsp.link(l.to, l.path);
        this.files++;
      } catch (err) {
        this.fail(l.path, err);
      }
    }
  }

  /**
   * A directory's metadata: with blocking calls when there are no extended attributes (microseconds
   * each; three thread-pool round trips per directory made the end of a restore of thousands of
   * directories wait ~0.2 s doing nothing).
   */
  private async applyDirMetadata(p: Buffer, node: Node): Promise<void> {
    if (node.extendedAttributes?.length) await applyMetadata(p, node, { owner: this.owner });
    else applyFileMetaSync(p, fileMeta(node), this.owner);
  }

  private async dirMetadata(): Promise<void> {
    this.dirMeta.sort((a, b) => b.depth - a.depth);
    for (const d of this.dirMeta) {
      try {
        await this.applyDirMetadata(d.path, d.node);
      } catch (err) {
        this.fail(d.path, err);
      }
    }
  }

  /** Re-reads every restored file and checks each blob's hash. Returns the number of files verified. */
  private async verify(jobs: FileJob[]): Promise<number> {
    let n = 0;
    await mapLimit(jobs, 8, async (job) => {
      if (job.failed) return;
      try {
        const fh = await fsp.open(job.path, 'r');
        try {
          const st = await fh.stat();
          if (st.size !== job.size) throw new IntegrityError(`size ${st.size} != ${job.size}`);
          for (const b of job.blobs) {
            const buf = Buffer.allocUnsafe(b.size);
            const { bytesRead } = await fh.read(buf, 0, b.size, b.offset);
            if (bytesRead !== b.size || sha256hex(buf) !== b.id) throw new IntegrityError(`content at offset ${b.offset} does not match blob ${b.id.slice(0, 10)}`);
          }
        } finally {
          await fh.close();
        }
        n++;
        this.progress({ phase: 'verify', filesDone: n, filesTotal: jobs.length });
      } catch (err) {
        this.fail(job.path, err);
      }
    });
    return n;
  }

  async run(snap: SnapshotEntry, subpath: string): Promise<RestoreSummary> {
    const started = Date.now();
    const target = (this.target = Buffer.from(path.resolve(this.opts.target)));
    // Without a gate the target is made at once (a read-only target fails before any tree is read).
    if (!this.opts.gate) await this.opened();
    const { nodes, single } = await treeAt(this.repo, snap.snapshot.tree, subpath);
    try {
      if (single) {
        // A single file (or other node) as the sub-path: restore it into the target directory.
        await this.walk([single], target, path.posix.dirname(subpath), 0, true);
      } else {
        await this.walk(nodes, target, subpath, 0, false);
      }
      await this.flushBatch(); // (opens the target even when there are no files)
      await this.batchDone;
    } finally {
      await this.batchDone.catch(() => {});
      await this.pool?.close();
      this.pool = undefined;
    }
    await this.links();
    await this.dirMetadata();
    const verified = this.opts.verify ? this.verified : undefined;
    this.progress({ phase: 'restore', filesDone: this.files, bytesDone: this.bytes, done: true });
    return {
      snapshotId: snap.id,
      target: target.toString(),
      files: this.files,
      dirs: this.dirs,
      others: this.others,
      bytes: this.bytes,
      verified,
      errors: this.errors,
      durationMs: Date.now() - started,
    };
  }
}

/**
 * mkdir -p that reports the real reason: Node's recursive mkdir says ENOENT when a missing parent
 * cannot be created (read-only file system, permissions); creating them one by one gives EROFS/EACCES.
 */
async function mkdirAll(dir: string): Promise<void> {
  try {
    await fsp.mkdir(dir, { recursive: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    const missing: string[] = [];
    for (let d = dir; d !== path.dirname(d); d = path.dirname(d)) {
      if (await fsp.lstat(d).then(() => true, () => false)) break;
      missing.unshift(d);
    }
    for (const d of missing) await fsp.mkdir(d);
    throw err;
  }
}

export async function restore(repo: Repository, opts: RestoreOptions): Promise<RestoreSummary> {
  const { id, subpath } = splitSnapshotSpec(opts.snapshot);
  // The snapshot is looked up while the lock is taken (its files are named by their hashes, and a
  // snapshot removed meanwhile fails the restore as it would a moment later); with the early lock
  // nothing is written to the target before the lock's second check has passed.
  const found = findSnapshot(repo, id, opts.filter);
  found.catch(() => {});
  // The workers start while the lock is taken (a restore with files to write needs them).
  prestartRestoreWorkers(repo.key);
  try {
    const lock = opts.noLock ? undefined : await RepoLock.acquire(repo, { exclusive: false, retryMs: opts.retryLockMs, loadIndex: opts.progress ?? noProgress, early: true });
    try {
      await repo.ensureIndex(opts.progress);
      // The walk starts while the lock is checked again; the target is touched only after.
      const run = async () => new Restorer(repo, { ...opts, gate: lock?.confirmed }).run(await found, subpath);
      return await (lock ? lock.judged(run) : run());
    } finally {
      await lock?.release();
    }
  } finally {
    discardRestoreWorkers();
  }
}
