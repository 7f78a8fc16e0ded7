import { Flags } from '@oclif/core';
import { DmctlCommand, repoFlags } from '../base-command.js';
import { openRepositoryFromSettings } from '../config/open-repo.js';
import { prune, parseMaxUnused, parseSize, PruneOptions, PruneResult } from '../maintenance/prune.js';
import { Repository } from '../repository/repository.js';
import { LockOptions, RepoLock } from '../repository/lock.js';
import { formatBytes, formatPercent } from '../ui/format.js';
import { kubeRequested, maintenanceKubeFlags, runInCluster } from '../kube/cli.js';

/** prune's flags, shared with `forget --prune`. */
export const pruneFlags = {
  'max-unused': Flags.string({
    summary: 'Tolerate this much unused data: a percentage of used data (5%), a size (100m) or "unlimited".',
    default: '5%',
    helpValue: 'LIMIT',
  }),
  'max-repack-size': Flags.string({ summary: 'Repack at most this much data (k/m/g/t suffixes).', helpValue: 'SIZE' }),
  'repack-cacheable-only': Flags.boolean({ summary: 'Only repack tree packs (the ones a cache holds).' }),
  'repack-small': Flags.boolean({ summary: 'Also repack packs below 80% of the target pack size.' }),
  'repack-uncompressed': Flags.boolean({ summary: 'Repack packs holding uncompressed data, compressing it (repository v2).' }),
  'output-name': Flags.string({ summary: 'Print a Kanister phase output with this key: the space freed ("<n> B").', helpValue: 'KEY' }),
};

type PruneFlagValues = {
  'max-unused': string;
  'max-repack-size'?: string;
  'repack-cacheable-only': boolean;
  'repack-small': boolean;
  'repack-uncompressed': boolean;
  'dry-run'?: boolean;
};

export function pruneOptionsFrom(flags: PruneFlagValues): PruneOptions {
  parseMaxUnused(flags['max-unused']);
  return {
    maxUnused: flags['max-unused'],
    maxRepackBytes: flags['max-repack-size'] !== undefined ? parseSize(flags['max-repack-size'], '--max-repack-size') : undefined,
    repackCacheableOnly: flags['repack-cacheable-only'],
    repackSmall: flags['repack-small'],
    repackUncompressed: flags['repack-uncompressed'],
    dryRun: flags['dry-run'],
  };
}

/** The human report of a prune, restic-like. */
export function pruneReportLines(r: PruneResult, verbose = false): string[] {
  const s = r.stats;
  const totalBlobs = s.blobs.used + s.blobs.unused + s.blobs.duplicate;
  const totalSize = s.size.used + s.size.duplicate + s.size.unused + s.size.unref;
  const unusedSize = s.size.duplicate + s.size.unused;
  const prunedBlobs = s.blobs.remove + s.blobs.repackrm;
  const unusedAfter = unusedSize - s.size.remove - s.size.repackrm;
  const pad = (n: number) => String(n).padStart(10);
  const out = [
    `used:         ${pad(s.blobs.used)} blobs / ${formatBytes(s.size.used)}`,
    ...(s.blobs.duplicate ? [`duplicates:   ${pad(s.blobs.duplicate)} blobs / ${formatBytes(s.size.duplicate)}`] : []),
    `unused:       ${pad(s.blobs.unused)} blobs / ${formatBytes(s.size.unused)}`,
    ...(s.size.unref ? [`unreferenced:                    ${formatBytes(s.size.unref)}`] : []),
    `total:        ${pad(totalBlobs)} blobs / ${formatBytes(totalSize)}`,
    `unused size: ${formatPercent(unusedSize, totalSize)} of total size`,
    '',
    `to repack:    ${pad(s.blobs.repack)} blobs / ${formatBytes(s.size.repack)}`,
    `this removes: ${pad(s.blobs.repackrm)} blobs / ${formatBytes(s.size.repackrm)}`,
    `to delete:    ${pad(s.blobs.remove)} blobs / ${formatBytes(s.size.remove + s.size.unref)}`,
    `total prune:  ${pad(prunedBlobs)} blobs / ${formatBytes(r.spaceFreed)}`,
    `remaining:    ${pad(totalBlobs - prunedBlobs)} blobs / ${formatBytes(totalSize - r.spaceFreed)}`,
    `unused size after prune: ${formatBytes(unusedAfter)} (${formatPercent(unusedAfter, totalSize - r.spaceFreed)} of remaining size)`,
    '',
    `to keep:      ${pad(s.packs.keep)} packs`,
    `to repack:    ${pad(s.packs.repack)} packs`,
    `to delete:    ${pad(s.packs.remove)} packs`,
    ...(s.packs.unref ? [`to delete:    ${pad(s.packs.unref)} unreferenced packs`] : []),
  ];
  if (r.dryRun || verbose) {
    const list = (title: string, ids: string[]) => (ids.length ? ['', `${title}:`, ...ids.map((i) => `  ${i}`)] : []);
    out.push(
      ...list(r.dryRun ? 'would delete unreferenced packs' : 'deleted unreferenced packs', r.plan.unreferenced),
      ...list(r.dryRun ? 'would repack and delete' : 'repacked and deleted', r.plan.repack),
      ...list(r.dryRun ? 'would delete unused packs' : 'deleted unused packs', r.plan.remove),
      ...list(r.dryRun ? 'would forget missing unused packs' : 'forgot missing unused packs', r.plan.missingUnused),
    );
  }
  out.push('');
  out.push(r.dryRun ? `dry run: nothing changed; would free ${formatBytes(r.spaceFreed)}` : `done: freed ${formatBytes(r.spaceFreed)}`);
  return out;
}

/**
 * Runs `fn` holding a repository lock; a SIGINT/SIGTERM releases the lock before dmctl exits.
 * `onInterrupt` is the command's own (protected) registration method.
 */
export async function withRepoLock<T>(
  onInterrupt: (h: () => Promise<void>) => () => void,
  repo: Repository,
  lockOpts: Omit<LockOptions, 'onLost'>,
  fn: () => Promise<T>,
): Promise<T> {
  const lock = await RepoLock.acquire(repo, lockOpts);
  const unregister = onInterrupt(() => lock.release());
  try {
    return await fn();
  } finally {
    unregister();
    await lock.release();
  }
}

export type PruneCommandResult = PruneResult & { spaceFreedHuman: string };

export function withHuman(r: PruneResult): PruneCommandResult {
  return { ...r, spaceFreedHuman: formatBytes(r.spaceFreed) };
}

export default class Prune extends DmctlCommand {
  static override summary = 'Remove data no snapshot needs any more.';
  static override description = `Finds the blobs the snapshots still use, deletes packs that hold none of them, repacks packs that hold some (up to --max-unused unused data is tolerated) and rewrites the index, exactly as restic 0.14 plans it. Safe to interrupt at any moment: the next prune finishes the job. Needs an exclusive lock.

--output-name prints the space freed as a Kanister phase output ("<n> B"), the value Kanister's DeleteData reports as spaceFreed.`;
  static override examples = [
    { description: 'Prune with the defaults:', command: '<%= config.bin %> <%= command.id %>' },
    { description: 'Show what would be done:', command: '<%= config.bin %> <%= command.id %> --dry-run' },
    { description: 'Remove every unused byte, repacking at most 2 GiB:', command: '<%= config.bin %> <%= command.id %> --max-unused 0 --max-repack-size 2g' },
  ];
  static override flags = {
    ...maintenanceKubeFlags,
    ...repoFlags,
    ...pruneFlags,
    'dry-run': Flags.boolean({ char: 'n', summary: 'Only print the plan; change nothing.' }),
  };

  async run(): Promise<PruneCommandResult> {
    if (kubeRequested(this.argv)) return runInCluster(this, 'prune') as Promise<never>;
    const { flags } = await this.parse(Prune);
    const opts = pruneOptionsFrom(flags);
    const settings = await this.settings();
    const repo: Repository = await openRepositoryFromSettings(settings);
    let result: PruneResult;
    try {
      result = await withRepoLock((h) => this.onInterrupt(h), repo, { exclusive: true, retryMs: settings.retryLockMs }, () =>
        prune(repo, { ...opts, locked: true, progress: this.progress('prune'), signal: this.abortSignal }),
      );
    } finally {
      await repo.backend.close();
    }
    if (!this.jsonEnabled()) for (const l of pruneReportLines(result)) this.log(l);
    if (flags['output-name']) this.phaseOutput(flags['output-name'], `${result.spaceFreed} B`);
    return withHuman(result);
  }
}
