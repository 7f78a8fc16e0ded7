// A restic-format repository on a Backend: open/init, the master index, unpacked files, blobs, and
// the pack writer. Everything above (archiver, restorer, maintenance, server) goes through this.
import os from 'node:os';
import path from 'node:path';
import { promises as fsp } from 'node:fs';
import { IntegrityError, NoRepositoryError, DmctlError, isObjectDamage, isNotFound } from '../core/errors.js';
import { mapFsError, readFull } from '../storage/local.js';
import { mapLimit, Semaphore } from '../core/limit.js';
import { collectGarbage, collectYoung } from '../core/gc.js';
import { ProgressFn, noProgress } from '../core/progress.js';
import { Backend, FileType, hasConfig, listAll, spoolingOf, SpoolingBackend } from '../storage/backend.js';
import { randomPolynomial } from '../chunker/polynomial.js';
import { MAX_SIZE } from '../chunker/chunker.js';
import { MasterKey, newMasterKey, openAsync, sealAsync, sha256hexAsync } from './crypto.js';
import { compress, decompress, looksCompressed, ZSTD_LEVEL, ZSTD_LEVEL_MAX } from './compression.js';
import { RepoConfig, newConfig, openConfig, saveConfig } from './config-file.js';
import { IndexPack, MasterIndex, decodeIndex, encodeIndex, BlobLocation } from './index-file.js';
import { addKey, findKey, type PreferredKey } from './key-file.js';
import { BlobType, PackBuilder, FilePackBuilder, removeStaleSpool, hashFileSync } from './pack.js';
import { RepoCache } from './cache.js';
import { SealPool, type FileBatch, type HashedChunk } from './seal-pool.js';
import { decodeUnpacked, encodeUnpacked } from './unpacked.js';

/** Index JSON parsed between full garbage collections while the index loads (see loadIndex). */
const INDEX_JSON_PER_GC = 16 * 1024 * 1024;

export type UnpackedType = 'index' | 'snapshots' | 'locks';
export type Compression = 'auto' | 'off' | 'max';

export const DEFAULT_PACK_SIZE = 16 * 1024 * 1024;

/** Room for a pack of `packSize`: the target plus the largest blob, which may come just before it is reached. */
const PACK_CAPACITY = (packSize: number) => packSize + MAX_SIZE + 1024 * 1024;

/** A temp pack (remote storage) could not be written: its folder is named, not the repository. */
function tempPackError(err: unknown, file: string): Error {
  if (err instanceof DmctlError) return err;
  return mapFsError(err, `writing a temporary pack in ${path.dirname(file)}`, 'free space there, or point TMPDIR (or --cache-dir) at a larger disk; the repository is still consistent');
}
/** restic writes an index file once it holds this many blobs (compressed repositories). */
const INDEX_FULL_BLOBS = 150_000;
/** Blobs accepted by enqueue() but not yet in a pack: at most this many, and about this many bytes. */
const MAX_QUEUED = 32;
const MAX_QUEUED_BYTES = 8 * 1024 * 1024;
/** Sealed bytes of the open spooled pack that may wait for the disk before save() waits too. */
const MAX_UNWRITTEN = 4 * 1024 * 1024;
/** Bytes of cached tree packs also held in memory. */
const TREE_PACKS_IN_MEMORY = 32 * 1024 * 1024;

export interface InitOptions {
  version?: 1 | 2;
  polynomial?: bigint;
  username?: string;
  hostname?: string;
  /** Called with the key file written for the new repository. */
  onKeyFile?: (keyId: string, raw: Buffer) => void;
}

export interface OpenOptions {
  keyHint?: string;
  /** A key unwrapped meanwhile from a local copy of a key file (see findKey). */
  preferredKey?: Promise<PreferredKey | undefined>;
  /** Called with the key file that opened the repository when it was read from the repository. */
  onKeyFile?: (keyId: string, raw: Buffer) => void;
}

/**
 * What a failed read of a pack becomes: a missing or truncated pack is damage to the repository
 * (an IntegrityError naming the pack and the blob wanted, `what`); anything else (an outage, a
 * refused request) stays as it is.
 */
export function packReadError(err: unknown, packId: string, what: string): unknown {
  if (!isObjectDamage(err)) return err;
  return new IntegrityError(`pack ${packId.slice(0, 10)} holding ${what}: ${(err as DmctlError).message}`, {
    cause: err,
    hint: 'the pack is missing or truncated; run `dmctl check --read-data`',
  });
}

export class Repository {
  readonly index = new MasterIndex();
  private indexLoaded = false;
  /** Local copies of index files and tree packs (remote repositories; see cache.ts). */
  cache: RepoCache | undefined;
  private readonly treePackFetches = new Map<string, Promise<boolean>>();
  /**
   * Tree packs held in memory (a walk reads hundreds of trees from each), up to a budget: cached
   * ones (remote repositories) whole, others as the span of their tree blobs (`start` = its offset).
   */
  private readonly treePacksInMemory = new Map<string, { start: number; data: Buffer }>();
  private treePackBytes = 0;
  /** Local repositories: span reads in flight, and how often each pack's span was read. */
  private readonly treeSpanLoads = new Map<string, Promise<{ start: number; data: Buffer } | undefined>>();
  private readonly treeSpanReads = new Map<string, number>();
  /** Whole tree packs being downloaded at once (each is held in memory until written). */
  private readonly treePackSlots = new Semaphore(2);

  private constructor(
    readonly backend: Backend,
    readonly key: MasterKey,
    readonly keyId: string,
    readonly config: RepoConfig,
  ) {}

  get version(): 1 | 2 {
    return this.config.version;
  }

  static async init(be: Backend, password: string | Buffer, opts: InitOptions = {}): Promise<Repository> {
    if (await hasConfig(be)) {
      throw new DmctlError('repository-exists', `a repository already exists at ${be.location}`, {
        hint: 'use it with `dmctl repo connect`, or pick another location',
      });
    }
    await be.create();
    const master = newMasterKey();
    const keyId = await addKey(be, master, password, { username: opts.username, hostname: opts.hostname ?? os.hostname(), onWritten: opts.onKeyFile });
    const config = newConfig(opts.version ?? 2, opts.polynomial ?? randomPolynomial());
    await saveConfig(be, master, config);
    return new Repository(be, master, keyId, config);
  }

  static async open(be: Backend, password: string | Buffer, opts: OpenOptions = {}): Promise<Repository> {
    // The config is read while the key is found and its scrypt runs (one round trip less on a
    // remote backend than stat, key, then config); a missing config still says "no repository".
    const raw = be.load('config', 'config').then(
      (b) => ({ b }),
      (err: unknown) => ({ err }),
    );
    const key = findKey(be, password, { hint: opts.keyHint, preferred: opts.preferredKey }).then(
      (k) => ({ k }),
      (err: unknown) => ({ err }),
    );
    const r = await raw;
    if ('err' in r) {
      await key;
      throw isNotFound(r.err) ? new NoRepositoryError(be.location) : r.err;
    }
    const k = await key;
    if ('err' in k) throw k.err;
    const repo = new Repository(be, k.k.master, k.k.keyId, openConfig(k.k.master, r.b));
    if (k.k.raw) opts.onKeyFile?.(k.k.keyId, k.k.raw);
    return repo;
  }

  // ---- unpacked files (index, snapshots, locks)

  async loadUnpacked(type: UnpackedType, id: string): Promise<Buffer> {
    const what = `${type === 'snapshots' ? 'snapshot' : type === 'locks' ? 'lock' : 'index'} ${id.slice(0, 10)}`;
    if (type === 'index' && this.cache) {
      const cached = await this.cache.get('index', id);
      if (cached) {
        try {
          return await decodeUnpacked(this.key, cached, this.version, what, id);
        } catch {
          await this.cache.drop('index', id); // damaged copy: read the repository's
        }
      }
      const data = await this.backend.load(type, id);
      const plain = await decodeUnpacked(this.key, data, this.version, what, id);
      await this.cache.put('index', id, data);
      return plain;
    }
    const data = await this.backend.load(type, id);
    return decodeUnpacked(this.key, data, this.version, what, id);
  }

  async saveUnpacked(type: UnpackedType, json: Buffer): Promise<string> {
    const { id, data } = await encodeUnpacked(this.key, json, this.version);
    await this.backend.save(type, id, data);
    if (type === 'index' && this.cache) await this.cache.put('index', id, data);
    return id;
  }

  async list(type: FileType): Promise<string[]> {
    return (await listAll(this.backend, type)).map((f) => f.name);
  }

  // ---- index

  /**
   * Loads the index files not loaded yet. When a loaded one is gone (an exclusive operation
   * replaced it), starts over, or with `failIfRemoved` returns false and changes nothing.
   */
  async loadIndex(progress: ProgressFn = noProgress, opts: { failIfRemoved?: boolean } = {}): Promise<boolean> {
    const ids = await this.list('index');
    const listed = new Set(ids);
    for (const f of this.index.files) {
      if (!listed.has(f)) {
        if (opts.failIfRemoved) return false;
        this.index.clear();
        break;
      }
    }
    let done = 0;
    let parsed = 0;
    await mapLimit(ids, Math.max(2, this.backend.connections), async (id) => {
      if (this.index.files.has(id)) return;
      const buf = await this.loadUnpacked('index', id);
      if (this.index.files.has(id)) return;
      this.index.addIndexBytes(id, buf, `index ${id.slice(0, 10)}`);
      // JSON.parse's objects are garbage once in the compact index, but V8 let them pile up to
      // ~100 MB with a million blobs; a full collection per 16 MiB of JSON took the peak of a
      // backup against such a repository from 323-365 MB to 264-317 MB, at no measurable cost.
      parsed += buf.length;
      if (parsed >= INDEX_JSON_PER_GC) {
        parsed = 0;
        collectGarbage();
      }
      progress({ phase: 'index', filesDone: ++done, filesTotal: ids.length });
    });
    this.indexLoaded = true;
    // Cache entries the repository no longer has go once per change of the index (loadIndex runs
    // twice when the lock is taken, the second time usually loading nothing).
    if (this.cache && (done > 0 || this.index.files.size === 0)) await this.cache.forgetAllBut(listed, this.index.packs);
    return true;
  }

  /** Drops the loaded index (it was read without the protection of a lock that turned out to conflict). */
  forgetIndex(): void {
    this.index.clear();
    this.indexLoaded = false;
  }

  async ensureIndex(progress?: ProgressFn): Promise<void> {
    if (!this.indexLoaded) await this.loadIndex(progress);
  }

  // ---- blobs

  /** Loads, verifies and returns a blob's plaintext. Names the pack on any damage. */
  async loadBlob(type: BlobType, id: string): Promise<Buffer> {
    const loc = this.index.lookup(type, id);
    if (!loc) throw new IntegrityError(`${type} blob ${id.slice(0, 10)} is not in the index`, { hint: 'run `dmctl check`' });
    return this.loadBlobAt(id, loc);
  }

  async loadBlobAt(id: string, loc: BlobLocation): Promise<Buffer> {
    if (loc.type === 'tree' && this.cache && (await this.cacheTreePack(loc.packId))) {
      const mem = this.treePacksInMemory.get(loc.packId);
      const raw = mem && loc.offset + loc.length <= mem.data.length ? mem.data.subarray(loc.offset, loc.offset + loc.length) : await this.cache.readRange(loc.packId, loc.offset, loc.length);
      if (raw) {
        try {
          return await this.decodeBlob(id, loc, raw);
        } catch {
          // damaged copy: read the repository's
          this.dropTreePackFromMemory(loc.packId);
          await this.cache.drop('data', loc.packId);
        }
      }
    } else if (loc.type === 'tree' && !this.cache) {
      const span = await this.treeSpan(loc.packId);
      if (span && loc.offset >= span.start && loc.offset + loc.length <= span.start + span.data.length) {
        // The same bytes the ranged read below would return: damage is reported as from the pack.
        return this.decodeBlob(id, loc, span.data.subarray(loc.offset - span.start, loc.offset - span.start + loc.length));
      }
    }
    let raw: Buffer;
    try {
      raw = await this.backend.load('data', loc.packId, loc.offset, loc.length);
    } catch (err) {
      throw packReadError(err, loc.packId, `${loc.type} blob ${id.slice(0, 10)}`);
    }
    return this.decodeBlob(id, loc, raw);
  }

  /**
   * Makes sure a pack of tree blobs is in the cache: fetched whole (one request instead of one per
   * directory) and kept only if its content matches its name. False when it is not cacheable
   * (mixed pack) or the fetch failed; the caller then reads from the repository as usual.
   */
  private cacheTreePack(packId: string): Promise<boolean> {
    let p = this.treePackFetches.get(packId);
    if (!p) {
      const cache = this.cache!;
      p = (async () => {
        const blobs = this.index.packs.get(packId);
        if (!blobs || blobs.some((b) => b.type !== 'tree')) return false;
        const onDisk = await cache.get('data', packId);
        if (onDisk) {
          this.keepTreePackInMemory(packId, onDisk);
          return true;
        }
        await this.treePackSlots.acquire();
        try {
          const data = await this.backend.load('data', packId);
          if ((await sha256hexAsync(data)) !== packId) return false;
          await cache.put('data', packId, data);
          this.keepTreePackInMemory(packId, data);
          return true;
        } catch {
          return false;
        } finally {
          this.treePackSlots.release();
        }
      })();
      this.treePackFetches.set(packId, p);
    }
    return p;
  }

  private keepTreePackInMemory(packId: string, data: Buffer, start = 0): void {
    if (data.length > TREE_PACKS_IN_MEMORY) return;
    // Oldest first out (Map order is insertion order).
    for (const id of [...this.treePacksInMemory.keys()]) {
      if (this.treePackBytes + data.length <= TREE_PACKS_IN_MEMORY) break;
      this.dropTreePackFromMemory(id);
    }
    this.treePacksInMemory.set(packId, { start, data });
    this.treePackBytes += data.length;
  }

  private dropTreePackFromMemory(packId: string): void {
    const b = this.treePacksInMemory.get(packId);
    if (!b) return;
    this.treePacksInMemory.delete(packId);
    this.treePackBytes -= b.data.length;
  }

  /**
   * Local repositories (no cache): the span of a pack's tree blobs, read in one request and held in
   * memory, so a walk costs one read per pack instead of one per directory (cold, scattered 4 KiB
   * reads were most of a prune's tree walk). Only for spans that are mostly trees and fit the memory
   * budget, and at most twice per pack: a walk that keeps evicting a pack it still needs falls back
   * to reading blob by blob instead of reading the pack over and over. Undefined: read the blob.
   */
  private treeSpan(packId: string): Promise<{ start: number; data: Buffer } | undefined> | undefined {
    const hit = this.treePacksInMemory.get(packId);
    if (hit) {
      // Most recently used last.
      this.treePacksInMemory.delete(packId);
      this.treePacksInMemory.set(packId, hit);
      return Promise.resolve(hit);
    }
    const loading = this.treeSpanLoads.get(packId);
    if (loading) return loading;
    const reads = this.treeSpanReads.get(packId) ?? 0;
    if (reads >= 2) return undefined;
    const blobs = this.index.packs.get(packId);
    if (!blobs) return undefined;
    let start = Infinity;
    let end = 0;
    let treeBytes = 0;
    for (const b of blobs) {
      if (b.type !== 'tree') continue;
      start = Math.min(start, b.offset);
      end = Math.max(end, b.offset + b.length);
      treeBytes += b.length;
    }
    if (end <= start || end - start > TREE_PACKS_IN_MEMORY / 2 || treeBytes * 2 < end - start) {
      this.treeSpanReads.set(packId, 2);
      return undefined;
    }
    this.treeSpanReads.set(packId, reads + 1);
    const p = (async () => {
      await this.treePackSlots.acquire();
      try {
        const data = await this.backend.load('data', packId, start, end - start);
        this.keepTreePackInMemory(packId, data, start);
        return { start, data };
      } catch {
        this.treeSpanReads.set(packId, 2);
        return undefined; // the blob's own read reports the damage
      } finally {
        this.treePackSlots.release();
        this.treeSpanLoads.delete(packId);
      }
    })();
    this.treeSpanLoads.set(packId, p);
    return p;
  }

  /** Decrypts (and decompresses) an encrypted blob read from a pack and checks its hash. */
  async decodeBlob(id: string, loc: BlobLocation, raw: Buffer): Promise<Buffer> {
    const what = `${loc.type} blob ${id.slice(0, 10)} in pack ${loc.packId.slice(0, 10)}`;
    let plain = await openAsync(this.key, raw, what);
    if (loc.uncompressedLength) {
      plain = await decompress(plain, what);
      if (plain.length !== loc.uncompressedLength) throw new IntegrityError(`${what}: decompressed size ${plain.length} != ${loc.uncompressedLength}`);
    }
    if ((await sha256hexAsync(plain)) !== id) throw new IntegrityError(`${what}: content does not match its ID`);
    return plain;
  }

  newWriter(opts: WriterOptions = {}): BlobWriter {
    return new BlobWriter(this, opts);
  }

  // ---- snapshots (raw JSON; src/repository/snapshot.ts decodes)

  async listSnapshotFiles(): Promise<string[]> {
    return this.list('snapshots');
  }

  async loadSnapshotJson(id: string): Promise<Buffer> {
    return this.loadUnpacked('snapshots', id);
  }
}

type Packer = PackBuilder | FilePackBuilder;

export interface WriterOptions {
  compression?: Compression;
  packSize?: number;
  /** Uploads in flight at most. */
  uploads?: number;
  progress?: ProgressFn;
  /**
   * Store every blob handed to save() even when the index already has it (prune's repack copies
   * blobs out of packs that are about to be deleted). Duplicates within this writer are still skipped.
   */
  ignoreIndex?: boolean;
  /**
   * Nothing is stored before this resolves (an early lock's confirmation: packs are built and
   * sealed meanwhile, within the usual bounds); if it rejects, that is the writer's failure.
   */
  gate?: Promise<void>;
  /**
   * In "auto" mode, store data blobs that look compressed already (compression.ts looksCompressed)
   * without compressing them. Backups set it; prune does not (`--repack-uncompressed` would
   * otherwise rewrite the same packs on every run).
   */
  storeCompressedAsIs?: boolean;
  /**
   * A dry run: packs are built, sealed and counted as usual but never stored, and no index is
   * written (`backup --dry-run`: what would be added, with nothing written).
   */
  discard?: boolean;
  /**
   * Have a seal worker hash each finished pack file (when the workers run), instead of this thread
   * hashing blobs as they are added. For a tree backup, whose main thread has the walk to do (1/10
   * of its time was pack hashing); a stream's backup is better off without the extra read.
   */
  hashPacksInWorkers?: boolean;
}

export interface WriterStats {
  dataBlobs: number;
  treeBlobs: number;
  /** Plaintext bytes of new blobs. */
  dataAdded: number;
  /** Bytes of new blobs as stored (compressed + encrypted), packs' headers excluded. */
  dataAddedPacked: number;
  packs: number;
  indexFiles: string[];
}

/**
 * Writes new blobs into packs (one packer per blob type), uploads finished packs with bounded
 * concurrency, adds them to the master index once stored, and writes index files. Order of
 * durability: packs → index files (flush) → caller writes the snapshot.
 */
export class BlobWriter {
  private packers: Partial<Record<BlobType, Packer>> = {};
  private creating: Partial<Record<BlobType, Promise<Packer>>> = {};
  private pending: Record<BlobType, Set<string>> = { data: new Set(), tree: new Set() };
  private inFlight = new Set<Promise<void>>();
  private unindexed: IndexPack[] = [];
  private unindexedBlobs = 0;
  private failure: unknown;
  private indexWrite: Promise<void> = Promise.resolve();
  readonly stats: WriterStats = { dataBlobs: 0, treeBlobs: 0, dataAdded: 0, dataAddedPacked: 0, packs: 0, indexFiles: [] };
  private readonly packSize: number;
  private readonly maxUploads: number;
  private readonly compression: Compression;
  private readonly spool: SpoolingBackend | undefined;
  private cleanup: Promise<void> = Promise.resolve();
  private readonly ignoreIndex: boolean;
  private readonly gate: Promise<void>;
  private readonly asIs: boolean;
  private readonly discard: boolean;
  private readonly hashPacksInWorkers: boolean;

  constructor(
    private readonly repo: Repository,
    opts: WriterOptions,
  ) {
    this.packSize = opts.packSize ?? DEFAULT_PACK_SIZE;
    this.spool = spoolingOf(repo.backend);
    // A local repository: packs are written in place and renamed, two at a time. Remote storage:
    // up to four uploads in flight, each holding its pack (read back from its temp file) in memory.
    this.maxUploads = opts.uploads ?? (this.spool ? 2 : Math.max(2, Math.min(repo.backend.connections, 4)));
    this.compression = repo.version === 1 ? 'off' : (opts.compression ?? 'auto');
    this.ignoreIndex = opts.ignoreIndex ?? false;
    this.asIs = opts.storeCompressedAsIs ?? false;
    this.discard = opts.discard ?? false;
    this.hashPacksInWorkers = opts.hashPacksInWorkers ?? false;
    this.gate = opts.gate ?? Promise.resolve();
    this.gate.catch(() => {}); // surfaces through store(), the index write and flush()
    // Temp packs of writers that were killed: reclaim their space (best effort, in the background).
    if (this.spool) this.cleanup = removeStaleSpool(this.spool.spoolDir()).then(() => {}, () => {});
  }

  /** True if this blob is already stored or accepted for storing. */
  has(type: BlobType, id: string): boolean {
    return (!this.ignoreIndex && this.repo.index.has(type, id)) || this.pending[type].has(id);
  }

  private packer(type: BlobType): Promise<Packer> {
    let c = this.creating[type];
    if (!c) {
      // Without a spool the body below runs synchronously, before `creating` is assigned: clearing
      // `creating` inside it left a settled promise there for good, and once that packer was full
      // save() spun forever on it (await of a settled promise never yields to I/O). Clear it after.
      const made = (async () => {
        let p: Packer | undefined;
        // (see WriterOptions.hashPacksInWorkers)
        const seals = this.hashPacksInWorkers ? (this.seals ?? undefined) : undefined;
        // (a pack finished once the pool is closed, on a failure's way out, is hashed here)
        const hashFile = seals ? async (file: string, size: number) => (seals.isOpen ? seals.hashFile(file, size) : hashFileSync(file, size)) : undefined;
        if (this.spool) {
          try {
            p = await FilePackBuilder.create(type, this.spool.spoolDir(), hashFile);
          } catch (err) {
            throw this.spool.spoolError(err);
          }
        } else {
          const dir = await this.tempPackDir();
          if (dir) {
            try {
              p = await FilePackBuilder.create(type, dir, hashFile);
            } catch {
              this.tempDir = null; // (not writable after all: packs in memory from now on)
            }
          }
          p ??= new PackBuilder(type, PACK_CAPACITY(this.packSize));
        }
        this.packers[type] = p;
        return p;
      })();
      c = this.creating[type] = made;
      const clear = () => {
        if (this.creating[type] === made) this.creating[type] = undefined;
      };
      made.then(clear, clear);
    }
    return c;
  }

  /**
   * Stores a blob unless it exists. Returns true when it was new. Resolves once the blob is in a
   * packer (not yet stored); awaits storage slots, which gives back-pressure to the caller.
   */
  async save(type: BlobType, id: string, plain: Buffer): Promise<boolean> {
    if (!this.claim(type, id)) return false;
    let payload: Buffer = plain;
    let ulen = 0;
    const level = this.level(type);
    // (a backup in "auto" mode stores data that is compressed already as it is; "max" tries anyway)
    if (level && plain.length > 0 && !(this.asIs && level === ZSTD_LEVEL && type === 'data' && looksCompressed(plain))) {
      payload = await compress(plain, level);
      ulen = plain.length;
    }
    const sealed = await sealAsync(this.repo.key, payload);
    await this.addSealed(type, id, sealed, ulen, plain.length);
    return true;
  }

  /** zstd level for blobs of this type, 0 for none (v1 repositories, `--compression off` data). */
  private level(type: BlobType): number {
    if (this.repo.version !== 2 || (type === 'data' && this.compression === 'off')) return 0;
    return this.compression === 'max' ? ZSTD_LEVEL_MAX : ZSTD_LEVEL;
  }

  /** Marks a blob as being stored; false when it exists or is already on its way. */
  private claim(type: BlobType, id: string): boolean {
    if (this.failure) throw this.failure;
    if (this.has(type, id)) return false;
    this.pending[type].add(id);
    return true;
  }

  /** Puts a sealed blob into the open packer; awaits the pack's storage when that fills it. */
  private async addSealed(type: BlobType, id: string, sealed: Buffer, ulen: number, plainLength: number, written?: () => void): Promise<void> {
    let p: Packer | undefined;
    try {
      // Check and add in the same tick: a packer seen here is open (full ones are detached at once).
      while (!(p = this.packers[type])) await this.packer(type);
    } catch (err) {
      written?.();
      throw err;
    }
    p.add(id, sealed, ulen, written);
    if (type === 'data') this.stats.dataBlobs++;
    else this.stats.treeBlobs++;
    this.stats.dataAdded += plainLength;
    this.stats.dataAddedPacked += sealed.length;
    if (p.size + p.headerSize() >= this.packSize) {
      this.packers[type] = undefined;
      await this.store(p);
    } else if (p instanceof FilePackBuilder) await p.drain(MAX_UNWRITTEN);
  }

  /**
   * The seal workers for large data blobs, started on first use (undefined where they cannot run:
   * the blobs then go through save()).
   */
  sealPool(): SealPool | undefined {
    if (this.seals === undefined) {
      try {
        this.seals = SealPool.create(this.repo.key) ?? null;
      } catch {
        this.seals = null;
      }
    }
    return this.seals ?? undefined;
  }
  private seals: SealPool | null | undefined;

  /**
   * Stores a chunk hashed by the seal workers, unless it exists (then the worker drops it): like
   * enqueue, returns once the blob is accepted into the bounded queue; sealing goes on in the worker.
   */
  async enqueueHashed(type: BlobType, h: HashedChunk, plainLength: number): Promise<void> {
    try {
      if (this.failure) throw this.failure;
      if (this.has(type, h.id)) return h.drop();
      await this.queueRoom();
      if (!this.claim(type, h.id)) return h.drop();
    } catch (err) {
      h.drop();
      throw err;
    }
    this.track(
      h.seal(this.level(type)).then(async ({ sealed, ulen, written }) => {
        try {
          await this.addSealed(type, h.id, sealed, ulen, plainLength, written);
        } finally {
          this.writeOut(type);
        }
      }),
      plainLength,
    );
  }

  /**
   * Starts writing what the open packer of `type` holds unwritten. Called once the blobs of a region
   * of the seal pool's output ring are all added: the region is released only when they are
   * written, and a file packer writes small blobs a megabyte at a time. Left waiting for more blobs,
   * regions of well-compressed data (a 4 MiB batch sealed into 200 KB) held the whole ring while
   * too few bytes were unwritten to start a write: every seal waited for ring space, nothing was
   * left to run, and Node exited with status 0 in the middle of the backup.
   */
  private writeOut(type: BlobType): void {
    const p = this.packers[type];
    if (p instanceof FilePackBuilder) p.flush();
  }

  /**
   * Stores the new chunks of a batch of files a seal worker read, chunked and hashed (the others
   * are duplicates). Returns once they are claimed and the batch is in
   * the bounded queue; compression and encryption go on in the worker. On failure the batch is dropped.
   */
  async enqueueFileBatch(batch: FileBatch): Promise<void> {
    const n = batch.ids.length;
    const keep = new Uint8Array(n);
    let bytes = 0;
    try {
      if (this.failure) throw this.failure;
      await this.queueRoom();
      for (let i = 0; i < n; i++) {
        if (this.claim('data', batch.ids[i])) {
          keep[i] = 1;
          bytes += batch.clens[i];
        }
      }
    } catch (err) {
      batch.drop();
      throw err;
    }
    if (!bytes) return batch.drop();
    const work = batch.seal(keep, this.level('data'), this.asIs).then(async ({ buf, lens, ulens, written }) => {
      // The region goes back once every blob in it is written (or abandoned), or never handed over.
      let unwritten = lens.length;
      const one = () => {
        if (--unwritten === 0) written();
      };
      let at = 0;
      let k = 0;
      try {
        for (let i = 0; i < n; i++) {
          if (!keep[i]) continue;
          const len = lens[k];
          const ulen = ulens[k];
          k++; // (handed over from here on)
          await this.addSealed('data', batch.ids[i], buf.subarray(at, at + len), ulen, batch.clens[i], one);
          at += len;
        }
      } catch (err) {
        // addSealed called `one` for the blob that failed; the ones after it were never handed over.
        while (k < lens.length) {
          k++;
          one();
        }
        throw err;
      } finally {
        this.writeOut('data');
      }
    });
    this.track(work, bytes);
  }

  private async store(p: Packer): Promise<void> {
    while (this.inFlight.size >= this.maxUploads) await Promise.race(this.inFlight);
    if (this.failure) {
      if (p instanceof FilePackBuilder) await p.abort();
      throw this.failure;
    }
    const task = (async () => {
      let id: string;
      let blobs;
      if (p instanceof FilePackBuilder) {
        try {
          let done: Awaited<ReturnType<FilePackBuilder['finish']>>;
          try {
            done = await p.finish(this.repo.key, { sync: this.spool !== undefined });
          } catch (err) {
            throw this.spool ? err : tempPackError(err, p.path);
          }
          ({ id, blobs } = done);
          if (this.discard) await p.abort();
          else {
            await this.gate;
            if (this.spool) await this.spool.adoptFile('data', id, done.path);
            else await this.upload(p.type, id, done.path, done.size);
          }
        } catch (err) {
          // A full disk, most likely: the temp pack must not stay behind to hold the space.
          await p.abort();
          throw err;
        }
      } else {
        const done = p.finish(this.repo.key);
        ({ id, blobs } = done);
        if (!this.discard) {
          await this.gate;
          await this.repo.backend.save('data', id, done.data);
          // A tree pack just stored is cached as it is (its name is its hash).
          if (p.type === 'tree') await this.repo.cache?.put('data', id, done.data);
        }
      }
      this.repo.index.addPack(id, blobs);
      if (!this.ignoreIndex) for (const b of blobs) this.pending[b.type].delete(b.id);
      this.unindexed.push({ id, blobs });
      this.unindexedBlobs += blobs.length;
      this.stats.packs++;
      // Collect the garbage of finished blobs, so the peak memory of a long stream does not drift
      // with its length: the young generation every 2 packs (most blob buffers die young), a full
      // collection every 8 (~128 MiB stored) for the promoted rest. A full one every 2 packs cost a
      // tree backup 0.5-1 s of main thread.
      if (this.stats.packs % 8 === 0) collectGarbage();
      else if (this.stats.packs % 2 === 0) collectYoung();
      if (this.unindexedBlobs >= INDEX_FULL_BLOBS) this.queueIndexWrite();
    })().catch((err) => {
      this.failure ??= this.spool ? this.spool.spoolError(err) : err;
    });
    const tracked = task.finally(() => this.inFlight.delete(tracked));
    this.inFlight.add(tracked);
  }

  /**
   * Remote storage: where packs are filled (as restic does, in temp files: a pack being filled
   * costs no memory; in memory, the data and tree packs being filled were up to 2 x 16 MiB of a
   * backup's peak). The cache's tmp folder, else the system's temp folder; null when neither can
   * be written (packs are then filled in memory).
   */
  private tempDir: string | null | undefined;

  private async tempPackDir(): Promise<string | undefined> {
    if (this.tempDir === undefined) {
      const dir = this.repo.cache ? path.join(this.repo.cache.dir, 'tmp') : path.join(os.tmpdir(), 'dmctl-packs');
      try {
        await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
        this.tempDir = dir;
        // Temp packs of writers that were killed (best effort, in the background).
        this.cleanup = removeStaleSpool(dir).then(() => {}, () => {});
      } catch {
        this.tempDir = null;
      }
    }
    return this.tempDir ?? undefined;
  }

  /** Finished pack buffers for uploads, reused (at most one per upload in flight). */
  private uploadBuffers: Buffer[] = [];

  /** Uploads a finished temp pack (read into a reused buffer), caches it if it holds trees, removes the file. */
  private async upload(type: BlobType, id: string, file: string, size: number): Promise<void> {
    let buf = this.uploadBuffers.pop();
    if (!buf || buf.length < size) buf = Buffer.allocUnsafeSlow(Math.max(size, PACK_CAPACITY(this.packSize)));
    try {
      const fh = await fsp.open(file, 'r');
      try {
        await readFull(async (b, off, len, pos) => (await fh.read(b, off, len, pos)).bytesRead, 0, size, `reading back temporary pack ${file}`, buf);
      } finally {
        await fh.close().catch(() => {});
      }
      const data = buf.subarray(0, size);
      await this.repo.backend.save('data', id, data);
      // A tree pack just stored is cached as it is (its name is its hash).
      if (type === 'tree') await this.repo.cache?.put('data', id, data);
    } finally {
      await fsp.unlink(file).catch(() => {});
      if (this.uploadBuffers.length < this.maxUploads) this.uploadBuffers.push(buf);
    }
  }

  private queued = new Set<Promise<void>>();
  private queuedBytes = 0;

  /**
   * Like save, but returns as soon as the blob is accepted into a bounded queue (by count and
   * bytes): the caller goes on with the next file while compression and encryption run. Failures
   * surface from a later enqueue or from flush.
   */
  async enqueue(type: BlobType, id: string, plain: Buffer): Promise<void> {
    if (this.failure) throw this.failure;
    if (this.has(type, id)) return;
    await this.queueRoom();
    if (this.has(type, id)) return;
    this.track(this.save(type, id, plain), plain.length);
  }

  /** Waits until the queue of accepted blobs has room (by count and bytes). */
  private async queueRoom(): Promise<void> {
    while (this.queued.size >= MAX_QUEUED || (this.queuedBytes >= MAX_QUEUED_BYTES && this.queued.size > 0)) {
      await Promise.race(this.queued);
      if (this.failure) throw this.failure;
    }
  }

  /** Counts an accepted blob's work against the queue until it is in a packer; failures surface later. */
  private track(work: Promise<unknown>, bytes: number): void {
    this.queuedBytes += bytes;
    const p = work.then(
      () => {},
      (err) => {
        this.failure ??= err;
      },
    );
    const tracked = p.finally(() => {
      this.queued.delete(tracked);
      this.queuedBytes -= bytes;
    });
    this.queued.add(tracked);
  }

  /** Drops open packs (their temp files) after a failure; nothing refers to them. */
  async abort(): Promise<void> {
    await Promise.allSettled([...Object.values(this.creating)]);
    for (const t of ['data', 'tree'] as const) {
      const p = this.packers[t];
      this.packers[t] = undefined;
      if (p instanceof FilePackBuilder) await p.abort();
    }
    await Promise.allSettled(this.queued);
    await this.closeSeals();
    await Promise.allSettled(this.inFlight);
  }

  /** Stops the seal workers (a later large blob starts new ones). */
  private async closeSeals(): Promise<void> {
    const pool = this.seals;
    this.seals = undefined;
    await pool?.close();
  }

  private queueIndexWrite(): void {
    const packs = this.unindexed;
    this.unindexed = [];
    this.unindexedBlobs = 0;
    if (!packs.length || this.discard) return;
    this.indexWrite = this.indexWrite.then(async () => {
      await this.gate;
      const id = await this.repo.saveUnpacked('index', encodeIndex({ packs }));
      this.stats.indexFiles.push(id);
      this.repo.index.files.add(id);
    });
  }

  /** Finishes open packs, waits for every upload, writes the index file(s). */
  async flush(): Promise<WriterStats> {
    await Promise.all(this.queued);
    if (this.failure) {
      await this.closeSeals();
      throw this.failure;
    }
    await Promise.allSettled([...Object.values(this.creating)]);
    for (const t of ['data', 'tree'] as const) {
      const p = this.packers[t];
      this.packers[t] = undefined;
      if (p && p.count) await this.store(p);
      else if (p instanceof FilePackBuilder) await p.abort();
    }
    await Promise.all(this.inFlight);
    // (after the last packs: a worker hashes each, see packer())
    await this.closeSeals();
    if (this.failure) throw this.failure;
    this.queueIndexWrite();
    await this.indexWrite;
    await this.gate;
    await this.cleanup;
    return this.stats;
  }
}

