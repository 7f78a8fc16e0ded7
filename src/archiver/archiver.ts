// Backup of files and directories into a snapshot, the way restic 0.14 lays it out (reference §10):
// the root tree mirrors the target paths as given (absolute targets from "/"), intermediate
// directories carry their real metadata, each directory becomes a tree blob written bottom-up.
import { promises as fsp, constants as fsc, BigIntStats, lstatSync, readdirSync } from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import { minimatch } from 'minimatch';
import { DmctlError, UsageError, describeSystemError } from '../core/errors.js';
import { Semaphore, mapLimit } from '../core/limit.js';
import { ProgressFn, noProgress } from '../core/progress.js';
import { Repository, BlobWriter, WriterStats, Compression } from '../repository/repository.js';
import { Node, encodeTree, decodeTree } from '../repository/tree.js';
import { Snapshot, encodeSnapshot } from '../repository/snapshot.js';
import { GoTime, nowGoTime, formatGoTime as formatTime } from '../repository/gotime.js';
import { sha256hex } from '../repository/crypto.js';
import { nodeFromStat } from './fsnode.js';
import { saveFile, saveBuffer, readSmallFile, SMALL_FILE, type SavedContent } from './file-saver.js';
import { SmallFiles } from './small-files.js';
import { MID_FILE } from './read-source.js';
import { RepoLock } from '../repository/lock.js';
import { SealPool } from '../repository/seal-pool.js';
import { findParentSnapshot, loadSnapshot } from '../repository/snapshots.js';
import { currentUsername } from '../repository/key-file.js';

export interface BackupOptions {
  paths: string[];
  tags?: string[];
  host?: string;
  excludes?: string[];
  /** Snapshot ID to use as parent; undefined = latest matching; null = none (--force). */
  parent?: string | null;
  withAtime?: boolean;
  ignoreInode?: boolean;
  compression?: Compression;
  time?: GoTime;
  dryRun?: boolean;
  progress?: ProgressFn;
  /** Files opened at once. */
  fileConcurrency?: number;
  retryLockMs?: number;
  signal?: AbortSignal;
  /** Store nothing before this resolves (see WriterOptions.gate). */
  gate?: Promise<void>;
}

export interface BackupSummary {
  snapshotId: string;
  shortId: string;
  parent?: string;
  time: string;
  paths: string[];
  filesNew: number;
  filesChanged: number;
  filesUnmodified: number;
  dirsNew: number;
  dirsChanged: number;
  dirsUnmodified: number;
  totalFilesProcessed: number;
  totalBytesProcessed: number;
  dataBlobs: number;
  treeBlobs: number;
  dataAdded: number;
  dataAddedPacked: number;
  packs: number;
  durationMs: number;
  errors: { path: string; message: string }[];
}

interface Counters {
  filesNew: number;
  filesChanged: number;
  filesUnmodified: number;
  dirsNew: number;
  dirsChanged: number;
  dirsUnmodified: number;
  files: number;
  bytes: number;
}

/** One level of the target trie: real directory `fsPath` whose listed `children` are targets or prefixes. */
interface TrieNode {
  name: Buffer;
  fsPath: string;
  /** This node is itself a backup target (whole subtree). */
  target: boolean;
  children: Map<string, TrieNode>;
}

function components(p: string): string[] {
  return p.split('/').filter((c) => c && c !== '.');
}

/** Builds restic's layout: absolute targets from "/", relative ones from the working directory. */
function buildTrie(targets: string[]): TrieNode {
  const root: TrieNode = { name: Buffer.alloc(0), fsPath: '/', target: false, children: new Map() };
  for (const t of targets) {
    const clean = path.normalize(t);
    const abs = path.isAbsolute(clean);
    const comps = components(clean);
    let node = root;
    let cur = abs ? '/' : '.';
    if (comps.length === 0) {
      node.target = true;
      node.fsPath = abs ? '/' : clean;
      continue;
    }
    for (const c of comps) {
      cur = cur === '.' ? c : path.join(cur, c);
      let next = node.children.get(c);
      if (!next) {
        next = { name: Buffer.from(c), fsPath: cur, target: false, children: new Map() };
        node.children.set(c, next);
      }
      node = next;
    }
    node.target = true;
  }
  return root;
}

/** Parent trees of upcoming sibling directories loaded ahead of the walk. */
const PARENT_PREFETCH = 8;

export class Archiver {
  private readonly writer: BlobWriter;
  private readonly fileSem: Semaphore;
  private readonly progress: ProgressFn;
  private readonly counters: Counters = { filesNew: 0, filesChanged: 0, filesUnmodified: 0, dirsNew: 0, dirsChanged: 0, dirsUnmodified: 0, files: 0, bytes: 0 };
  readonly errors: { path: string; message: string }[] = [];
  private readonly excludes: string[];
  private readonly hardlinks = new Map<string, Promise<{ content: string[]; size: number }>>();
  private readonly parentTrees = new Map<string, Promise<Node[]>>();

  constructor(
    private readonly repo: Repository,
    private readonly opts: BackupOptions,
  ) {
    this.writer = repo.newWriter({ compression: opts.compression, gate: opts.gate, storeCompressedAsIs: true, discard: opts.dryRun, hashPacksInWorkers: true });
    this.fileSem = new Semaphore(opts.fileConcurrency ?? 16);
    this.progress = opts.progress ?? noProgress;
    this.excludes = opts.excludes ?? [];
  }

  private report(item?: string): void {
    this.progress({ phase: 'backup', item, filesDone: this.counters.files, bytesDone: this.counters.bytes });
  }

  /**
   * A source file that cannot be read is left out with a warning (exit code 3, like restic);
   * repository and storage failures end the backup.
   */
  private leaveOut(p: string, err: unknown): void {
    if (err instanceof DmctlError) throw err;
    this.warn(p, err);
  }

  private warn(p: string, err: unknown): void {
    const message = err instanceof DmctlError ? err.message : describeSystemError(err);
    this.errors.push({ path: p, message });
    this.progress({ phase: 'backup', warning: `${p}: ${message}` });
  }

  private excluded(p: string, isDir: boolean): boolean {
    if (!this.excludes.length) return false;
    const base = path.basename(p);
    for (const pat of this.excludes) {
      const anchored = pat.startsWith('/');
      const target = anchored ? p : undefined;
      if (target && (minimatch(target, pat, { dot: true }) || minimatch(target, pat.replace(/\/$/, ''), { dot: true }))) return true;
      if (!anchored) {
        if (minimatch(base, pat, { dot: true })) return true;
        if (pat.includes('/') && minimatch(p, `**/${pat.replace(/\/$/, '')}`, { dot: true })) return true;
      }
      if (isDir && pat.endsWith('/') && minimatch(base, pat.slice(0, -1), { dot: true })) return true;
    }
    return false;
  }

  /** Starts loading a parent tree before it is needed (the walk would otherwise wait for each one). */
  private prefetchParent(subtree: string | undefined): void {
    if (!subtree || this.parentTrees.has(subtree)) return;
    this.parentTrees.set(subtree, this.repo.loadBlob('tree', subtree).then((b) => decodeTree(b)).catch(() => []));
  }

  private async parentChildren(subtree: string | undefined): Promise<Map<string, Node> | undefined> {
    if (!subtree) return undefined;
    this.prefetchParent(subtree);
    const nodes = await this.parentTrees.get(subtree)!;
    this.parentTrees.delete(subtree);
    const m = new Map<string, Node>();
    for (const n of nodes) m.set(n.name.toString('latin1'), n);
    return m;
  }

  private unchanged(node: Node, old: Node | undefined): boolean {
    if (!old || old.type !== 'file' || !old.content) return false;
    if (old.mtime.unixSec !== node.mtime.unixSec || old.mtime.nsec !== node.mtime.nsec) return false;
    if ((old.size ?? 0n) !== (node.size ?? 0n)) return false;
    if (!this.opts.ignoreInode) {
      if (old.ctime.unixSec !== node.ctime.unixSec || old.ctime.nsec !== node.ctime.nsec) return false;
      if ((old.inode ?? 0n) !== (node.inode ?? 0n)) return false;
    }
    for (const id of old.content) if (!this.writer.has('data', id)) return false;
    return true;
  }

  /**
   * Saves a regular file's content into `node`. A file that went to the seal workers' batches
   * comes back as `{ done }`: its content is on its way (awaited before the directory's tree is
   * written); any other file is saved by the time this returns.
   */
  private async saveRegular(fsPath: string | Buffer, node: Node, st: BigIntStats, old: Node | undefined): Promise<{ done: Promise<void> } | void> {
    if (this.unchanged(node, old)) {
      node.content = old!.content;
      this.counters.filesUnmodified++;
      this.counters.files++;
      this.counters.bytes += Number(st.size);
      this.report();
      return;
    }
    const hlKey = st.nlink > 1n ? `${st.dev}:${st.ino}` : undefined;
    const small = st.size < BigInt(MID_FILE) ? this.smallFiles() : undefined;
    const start = async (): Promise<{ result: Promise<SavedContent>; deferred: boolean }> => {
      if (small) {
        const { outcome } = await small.add(typeof fsPath === 'string' ? Buffer.from(fsPath) : fsPath, Number(st.size));
        const result = outcome.then((r) => {
          if (r !== 'big') {
            this.counters.bytes += r.size;
            return r;
          }
          return this.readRegular(fsPath, st);
        });
        return { result, deferred: true };
      }
      return { result: Promise.resolve(await this.readRegular(fsPath, st)), deferred: false };
    };
    let result: Promise<SavedContent>;
    let deferred = true;
    if (hlKey && this.hardlinks.has(hlKey)) result = this.hardlinks.get(hlKey)!;
    else {
      const started = start();
      result = started.then((s) => s.result);
      // (when start() fails, the await below throws and nothing else awaits `result`)
      result.catch(() => {});
      if (hlKey) this.hardlinks.set(hlKey, result);
      ({ deferred } = await started);
    }
    const done = result.then(({ content, size }) => {
      node.content = content;
      node.size = BigInt(size);
      if (old) this.counters.filesChanged++;
      else this.counters.filesNew++;
      this.counters.files++;
      this.report();
    });
    if (!deferred) return done;
    return { done };
  }

  /** The batches of small files for the seal workers (undefined where those cannot run). */
  private smallFiles(): SmallFiles | undefined {
    if (this.small === undefined) {
      const pool = this.writer.sealPool();
      this.small = pool ? new SmallFiles(pool, this.writer, this.repo.config.chunkerPolynomial) : null;
    }
    return this.small ?? undefined;
  }
  private small: SmallFiles | null | undefined;

  /** Reads and saves a file here, on the main thread (files of MID_FILE or more, or no seal workers). */
  private async readRegular(fsPath: string | Buffer, st: BigIntStats): Promise<SavedContent> {
    const onBytes = (n: number) => {
      this.counters.bytes += n;
    };
    if (st.size < SMALL_FILE) {
      // One synchronous open/read/close instead of three thread-pool round trips.
      const data = readSmallFile(fsPath, Number(st.size));
      return saveBuffer(this.writer, data, onBytes, this.repo.config.chunkerPolynomial);
    }
    await this.fileSem.acquire();
    let fh: fsp.FileHandle | undefined;
    try {
      fh = await fsp.open(fsPath, fsc.O_RDONLY | fsc.O_NOFOLLOW | (fsc.O_NOATIME ?? 0)).catch(() => fsp.open(fsPath, fsc.O_RDONLY | fsc.O_NOFOLLOW));
      return await saveFile(this.writer, this.repo.config.chunkerPolynomial, fh, Number(st.size), onBytes);
    } finally {
      await fh?.close().catch(() => {});
      this.fileSem.release();
    }
  }

  /**
   * Archives a directory's entries. Resolves once they are examined and its sub-directories walked;
   * `tree` then resolves with the tree ID once every content is known (the walk goes on meanwhile,
   * so the seal workers' batches fill across directories).
   */
  private async saveDir(fsPath: string | Buffer, old: Map<string, Node> | undefined, extra?: Map<string, TrieNode>): Promise<{ tree: Promise<string> }> {
    // Paths stay bytes all the way down: names need not be UTF-8, and a JS string of them would
    // name a different file.
    const dirBytes = typeof fsPath === 'string' ? Buffer.from(fsPath) : fsPath;
    const prefix = dirBytes.length === 1 && dirBytes[0] === 0x2f ? Buffer.alloc(0) : dirBytes;
    let names: Buffer[];
    try {
      // Synchronous like the lstat calls below: the walk is strictly depth-first, so an async
      // readdir left the main thread idle for a thread-pool round trip in every directory.
      names = readdirSync(dirBytes, { encoding: 'buffer' });
    } catch (err) {
      this.warn(dirBytes.toString(), err);
      names = [];
    }
    // The parent trees of the first sub-directories load while this directory's entries are
    // examined (the walk descends into them right after).
    if (old) {
      let n = 0;
      for (const name of names) {
        const o = old.get(name.toString('latin1'));
        if (o?.type === 'dir' && o.subtree) {
          this.prefetchParent(o.subtree);
          if (++n >= PARENT_PREFETCH) break;
        }
      }
    }
    const nodes: Node[] = [];
    const subdirs: { name: Buffer; full: Buffer; st: BigIntStats }[] = [];
    /** Contents on their way (rejects only when the backup cannot go on); awaited before the tree. */
    const pending: Promise<void>[] = [];
    const defer = (p: Promise<void>) => {
      p.catch(() => {}); // (awaited below; this keeps an early end of the walk from leaving it unhandled)
      pending.push(p);
    };
    await mapLimit(names, 16, async (name) => {
      const full = Buffer.concat([prefix, Buffer.from('/'), name]);
      let st: BigIntStats;
      try {
        // lstat of a listed entry: synchronous is ~10x cheaper for the main thread than a
        // thread-pool round trip, and it only reads the inode the readdir just touched.
        st = lstatSync(full, { bigint: true });
      } catch (err) {
        this.warn(full.toString(), err);
        return;
      }
      if (this.excluded(full.toString(), st.isDirectory())) return;
      if (st.isSocket()) return; // restic skips sockets
      const previous = this.opts.ignoreInode ? undefined : old?.get(name.toString('latin1'));
      const node = await nodeFromStat(name, full, st, { withAtime: this.opts.withAtime, previous });
      if (st.isDirectory()) {
        subdirs.push({ name, full, st });
        nodes.push(node);
        return;
      }
      nodes.push(node);
      if (st.isFile()) {
        const skip = (err: unknown) => {
          this.leaveOut(full.toString(), err);
          nodes.splice(nodes.indexOf(node), 1);
        };
        try {
          const later = await this.saveRegular(full, node, st, old?.get(name.toString('latin1')));
          if (later) defer(later.done.catch(skip));
        } catch (err) {
          skip(err);
        }
      }
    });
    // Sub-directories: strictly depth-first, so memory follows depth, not size (blob storing runs
    // behind in the writer's queue, so this does not serialise compression).
    const byName = new Map<string, Node>();
    for (const n of nodes) byName.set(n.name.toString('latin1'), n);
    const oldSubtree = (d: { name: Buffer }) => {
      const o = old?.get(d.name.toString('latin1'));
      return o?.type === 'dir' ? o.subtree : undefined;
    };
    await mapLimit(subdirs, 1, async (d, i) => {
      // The parent trees of the next few sub-directories load while this one is walked.
      if (old) for (let j = i + 1; j < Math.min(subdirs.length, i + 1 + PARENT_PREFETCH); j++) this.prefetchParent(oldSubtree(subdirs[j]));
      const key = d.name.toString('latin1');
      const node = byName.get(key)!;
      const oldNode = old?.get(key);
      const oldChildren = oldNode?.type === 'dir' ? await this.parentChildren(oldNode.subtree) : undefined;
      const { tree } = await this.saveDir(d.full, oldChildren);
      defer(
        tree.then((id) => {
          node.subtree = id;
          if (!oldNode) this.counters.dirsNew++;
          else if (oldNode.subtree === node.subtree) this.counters.dirsUnmodified++;
          else this.counters.dirsChanged++;
        }),
      );
    });
    if (extra) {
      for (const [, t] of extra) {
        if (byName.has(t.name.toString('latin1'))) continue;
        const n = await this.saveTrieNode(t, old);
        if (n) nodes.push(n);
      }
    }
    const tree = Promise.all(pending).then(() => this.saveTree(nodes));
    tree.catch(() => {}); // (the caller awaits it)
    return { tree };
  }

  /** Sends the seal workers what they have not been sent (before waiting for a tree). */
  private flushSmall(): void {
    this.small?.flush();
  }

  private async saveTree(nodes: Node[]): Promise<string> {
    const buf = encodeTree(nodes);
    const id = sha256hex(buf);
    await this.writer.save('tree', id, buf);
    return id;
  }

  /** A node of the target trie: a target (archived whole) or a prefix directory (only listed children). */
  /** Undefined for a target file that could not be read (left out with a warning). */
  private async saveTrieNode(t: TrieNode, oldSiblings: Map<string, Node> | undefined): Promise<Node | undefined> {
    const key = t.name.toString('latin1');
    const oldNode = oldSiblings?.get(key);
    let st: BigIntStats;
    try {
      st = await fsp.lstat(t.fsPath, { bigint: true });
    } catch (err) {
      throw new UsageError(`cannot back up ${t.fsPath}: ${describeSystemError(err)}`);
    }
    const node = await nodeFromStat(t.name, Buffer.from(t.fsPath), st, { withAtime: this.opts.withAtime, previous: this.opts.ignoreInode ? undefined : oldNode });
    if (t.target) {
      if (st.isDirectory()) {
        const oldChildren = oldNode?.type === 'dir' ? await this.parentChildren(oldNode.subtree) : undefined;
        const { tree } = await this.saveDir(t.fsPath, oldChildren);
        this.flushSmall();
        node.subtree = await tree;
      } else if (st.isFile()) {
        try {
          const later = await this.saveRegular(t.fsPath, node, st, oldNode);
          if (later) {
            this.flushSmall();
            await later.done;
          }
        } catch (err) {
          this.leaveOut(t.fsPath, err);
          return undefined;
        }
      }
      return node;
    }
    // prefix directory: only the listed children
    const oldChildren = oldNode?.type === 'dir' ? await this.parentChildren(oldNode.subtree) : undefined;
    const children: Node[] = [];
    for (const [, c] of t.children) {
      const n = await this.saveTrieNode(c, oldChildren);
      if (n) children.push(n);
    }
    node.subtree = await this.saveTree(children);
    return node;
  }

  async run(parentTree: string | undefined): Promise<{ tree: string; stats: WriterStats }> {
    const trie = buildTrie(this.opts.paths);
    const oldRoot = await this.parentChildren(parentTree);
    let tree: string;
    if (trie.target) {
      // "/" or "." itself: its entries form the root tree, plus any other targets
      const walked = await this.saveDir(trie.fsPath, oldRoot, trie.children);
      this.flushSmall();
      tree = await walked.tree;
    } else {
      const nodes: Node[] = [];
      for (const [, c] of trie.children) {
        const n = await this.saveTrieNode(c, oldRoot);
        if (n) nodes.push(n);
      }
      tree = await this.saveTree(nodes);
    }
    const stats = await this.writer.flush();
    return { tree, stats };
  }

  get count(): Counters {
    return this.counters;
  }
}

/** The whole `backup` operation: lock, index, parent, archive, snapshot. */
export async function backup(repo: Repository, opts: BackupOptions): Promise<BackupSummary> {
  const started = Date.now();
  if (!opts.paths.length) throw new UsageError('nothing to back up', 'give at least one PATH');
  for (const p of opts.paths) {
    try {
      await fsp.lstat(p);
    } catch (err) {
      throw new UsageError(`cannot back up ${p}: ${describeSystemError(err)}`);
    }
  }
  const progress = opts.progress ?? noProgress;
  const time = opts.time ?? nowGoTime();
  const absPaths = opts.paths.map((p) => path.resolve(p));
  const host = opts.host ?? os.hostname();
  // The parent is looked up while the lock is taken. It only saves reading files: its trees are
  // read with errors ignored and its contents are used only where the index has them.
  const parentFound = opts.parent === null ? Promise.resolve(undefined) : opts.parent ? loadSnapshot(repo, opts.parent) : findParentSnapshot(repo, host, absPaths, time);
  // Without a parent every file is read: the seal workers start now, while the lock is taken,
  // not when the walk meets its first file (with one, most backups never need them).
  let walking = false;
  parentFound.then(
    (p) => {
      if (!p && !walking) SealPool.prestart(repo.key);
    },
    () => {},
  );
  // The early lock: the walk starts while the lock is checked again (restic waits 200 ms first);
  // nothing is stored until that check has passed (the writer's gate, and the snapshot below).
  const noWalk = () => {
    walking = true;
    SealPool.discardWarm();
  };
  const lock = await RepoLock.acquire(repo, { exclusive: false, retryMs: opts.retryLockMs, loadIndex: progress, early: true }).catch((err: unknown) => {
    noWalk(); // (the lock could not be taken: the workers would wait for nothing)
    throw err;
  });
  try {
    await repo.ensureIndex(progress);
    const archiver = new Archiver(repo, { ...opts, gate: lock.confirmed });
    const { parent, tree, stats } = await lock.judged(async () => {
      const parent = await parentFound;
      walking = true;
      const { tree, stats } = await archiver.run(parent?.snapshot.tree);
      await lock.confirmed;
      return { parent, tree, stats };
    });
    const uid = process.getuid?.() ?? 0;
    const gid = process.getgid?.() ?? 0;
    const snap: Snapshot = {
      time,
      parent: parent?.id,
      tree,
      paths: absPaths,
      hostname: host,
      username: currentUsername(),
      uid,
      gid,
      excludes: opts.excludes?.length ? opts.excludes : undefined,
      tags: opts.tags?.length ? opts.tags : undefined,
    };
    const snapshotId = opts.dryRun ? '' : await repo.saveUnpacked('snapshots', encodeSnapshot(snap));
    const c = archiver.count;
    progress({ phase: 'backup', filesDone: c.files, bytesDone: c.bytes, done: true });
    return {
      snapshotId,
      shortId: snapshotId.slice(0, 8),
      parent: parent?.id,
      time: formatTime(time),
      paths: absPaths,
      filesNew: c.filesNew,
      filesChanged: c.filesChanged,
      filesUnmodified: c.filesUnmodified,
      dirsNew: c.dirsNew,
      dirsChanged: c.dirsChanged,
      dirsUnmodified: c.dirsUnmodified,
      totalFilesProcessed: c.files,
      totalBytesProcessed: c.bytes,
      dataBlobs: stats.dataBlobs,
      treeBlobs: stats.treeBlobs,
      dataAdded: stats.dataAdded,
      dataAddedPacked: stats.dataAddedPacked,
      packs: stats.packs,
      durationMs: Date.now() - started,
      errors: archiver.errors,
    };
  } finally {
    noWalk();
    await lock.release();
  }
}

