import { Args, Flags } from '@oclif/core';
import { DmctlCommand, noLockFlag, repoFlags } from '../base-command.js';
import { RepoLock } from '../repository/lock.js';
import { noProgress } from '../core/progress.js';
import { openRepositoryFromSettings } from '../config/open-repo.js';
import { findSnapshot } from '../repository/snapshots.js';
import { Node, decodeTree } from '../repository/tree.js';
import { formatGoTime } from '../repository/gotime.js';
import { Repository } from '../repository/repository.js';
import { filterFrom, snapshotFilterFlags, } from './restore.js';
import { snapshotJson } from './snapshots.js';
import { treeAt } from '../restorer/restorer.js';

function modeString(n: Node): string {
  const t = { dir: 'd', symlink: 'L', dev: 'D', chardev: 'c', fifo: 'p', socket: 'S', file: '-' }[n.type] ?? '?';
  const p = n.mode & 0o777;
  const rwx = ['r', 'w', 'x'];
  let s = '';
  for (let i = 8; i >= 0; i--) s += p & (1 << i) ? rwx[(8 - i) % 3] : '-';
  return t + s;
}

export function nodeJson(n: Node, path: string): Record<string, unknown> {
  return {
    name: n.name.toString(),
    type: n.type,
    path,
    uid: n.uid,
    gid: n.gid,
    // restic's `ls --json` gives every file a size (0 for an empty file, whose tree node has none)
    // and no other node type one.
    ...(n.type === 'file' ? { size: Number(n.size ?? 0n) } : {}),
    mode: n.mode,
    mtime: formatGoTime(n.mtime),
    atime: formatGoTime(n.atime),
    ctime: formatGoTime(n.ctime),
    ...(n.linktarget ? { linktarget: n.linktarget.toString() } : {}),
  };
}

/** Sub-trees of upcoming sibling directories loaded ahead of the walk. */
const TREE_PREFETCH = 8;

async function* walk(repo: Repository, nodes: Node[], prefix: string, recursive: boolean): AsyncGenerator<{ node: Node; path: string }> {
  // Depth-first in tree order, with the next few sibling directories' trees loading meanwhile
  // (each level holds at most TREE_PREFETCH of them, so memory follows depth, not size).
  const dirs = recursive ? nodes.filter((n) => n.type === 'dir' && n.subtree) : [];
  const loading = new Map<Node, Promise<Node[]>>();
  let ahead = 0;
  const prefetch = () => {
    while (ahead < dirs.length && loading.size < TREE_PREFETCH) {
      const d = dirs[ahead++]!;
      const p = repo.loadBlob('tree', d.subtree!).then(decodeTree);
      p.catch(() => {}); // reported when awaited below
      loading.set(d, p);
    }
  };
  prefetch();
  for (const n of nodes) {
    const p = `${prefix === '/' ? '' : prefix}/${n.name.toString()}`;
    yield { node: n, path: p };
    const sub = loading.get(n);
    if (sub) {
      loading.delete(n);
      prefetch();
      yield* walk(repo, await sub, p, true);
    }
  }
}

export default class Ls extends DmctlCommand {
  static override summary = 'List the files in a snapshot.';
  static override description = 'Lists everything below PATH (default: the whole snapshot) recursively, or one level with --no-recursive. --long shows mode, owner, size and modification time.';
  static override examples = [
    { description: 'Everything in the newest snapshot:', command: '<%= config.bin %> <%= command.id %> latest' },
    { description: 'One directory, long format:', command: '<%= config.bin %> <%= command.id %> 4f2a9c1e /var/lib/data --long --no-recursive' },
  ];
  static override args = {
    snapshot: Args.string({ description: 'ID, ID prefix or latest.', required: true }),
    path: Args.string({ description: 'Directory or file inside the snapshot.', required: false }),
  };
  static override flags = {
    ...repoFlags,
    'no-lock': noLockFlag,
    ...snapshotFilterFlags,
    long: Flags.boolean({ char: 'l', summary: 'Long format: mode, owner, size, time.' }),
    recursive: Flags.boolean({ summary: 'Descend into directories.', default: true, allowNo: true }),
  };

  async run(): Promise<{ snapshot: Record<string, unknown>; nodes: Record<string, unknown>[] }> {
    const { args, flags } = await this.parse(Ls);
    const settings = await this.settings();
    const repo = await openRepositoryFromSettings(settings);
    // A shared lock, as restic's ls takes: a prune cannot delete the trees being listed meanwhile.
    const lock = flags['no-lock'] ? undefined : await RepoLock.acquire(repo, { exclusive: false, retryMs: settings.retryLockMs, loadIndex: noProgress });
    try {
      await repo.ensureIndex();
      const snap = await findSnapshot(repo, args.snapshot, filterFrom(flags));
      const at = args.path ? `/${args.path.replace(/^\/+/, '')}`.replace(/\/+$/, '') || '/' : '/';
      const { nodes, single } = await treeAt(repo, snap.snapshot.tree, at);
      const base = single ? at.slice(0, at.lastIndexOf('/')) || '/' : at;
      const out: Record<string, unknown>[] = [];
      // Lines go out in batches: one write per line was a good part of the time for large trees.
      let lines: string[] = [];
      for await (const { node, path } of walk(repo, nodes, base, flags.recursive)) {
        if (this.jsonEnabled()) out.push(nodeJson(node, path));
        else if (flags.long) {
          const size = String(node.size ?? 0n).padStart(10);
          lines.push(`${modeString(node)} ${String(node.uid).padStart(5)} ${String(node.gid).padStart(5)} ${size} ${formatGoTime(node.mtime).slice(0, 19).replace('T', ' ')} ${path}${node.linktarget ? ` -> ${node.linktarget.toString()}` : ''}`);
        } else lines.push(path);
        if (lines.length >= 1000) {
          this.log(lines.join('\n'));
          lines = [];
        }
      }
      if (lines.length) this.log(lines.join('\n'));
      return { snapshot: snapshotJson(snap), nodes: out };
    } finally {
      await lock?.release();
      await repo.backend.close();
    }
  }
}
