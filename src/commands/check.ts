import { Flags } from '@oclif/core';
import { DmctlCommand, repoFlags } from '../base-command.js';
import { openRepositoryFromSettings } from '../config/open-repo.js';
import { EXIT_CODES } from '../core/errors.js';
import { check, CheckResult, MetadataPrefetch, parseReadDataSubset } from '../maintenance/check.js';
import { formatBytes } from '../ui/format.js';
import { withRepoLock } from './prune.js';
import { kubeRequested, maintenanceKubeFlags, runInCluster } from '../kube/cli.js';

export default class Check extends DmctlCommand {
  static override summary = 'Check the repository for damage.';
  static override description = `Checks that every index file decodes, every indexed pack exists with the size and header the index describes, and every snapshot's trees decode and reference only indexed blobs. --read-data also reads every pack and verifies its hash and every blob's MAC and SHA-256; --read-data-subset reads a part (n/t: the packs whose ID's first byte modulo t is n-1, as restic selects them; x% or a size: a random choice).

Each problem is printed with the ID of the damaged object. Exit code 5 when the repository is damaged, 0 otherwise; packs no index mentions are reported as hints, not errors. Takes an exclusive lock like restic 0.14 (--no-lock skips it). Like restic, it reads everything from the repository, not from the local cache of a remote repository, unless --with-cache is given.`;
  static override examples = [
    { description: 'Check the structure:', command: '<%= config.bin %> <%= command.id %>' },
    { description: 'Read and verify every byte:', command: '<%= config.bin %> <%= command.id %> --read-data' },
    { description: 'Read a fifth of the packs each day of a 5-day cycle:', command: '<%= config.bin %> <%= command.id %> --read-data-subset 3/5' },
  ];
  static override flags = {
    ...maintenanceKubeFlags,
    ...repoFlags,
    'read-data': Flags.boolean({ summary: 'Read and verify all data.', exclusive: ['read-data-subset'] }),
    'read-data-subset': Flags.string({ summary: 'Read and verify a subset: n/t, x% or a size.', helpValue: 'SUBSET', exclusive: ['read-data'] }),
    'no-lock': Flags.boolean({ summary: 'Do not lock the repository (read-only check of a repository in use).' }),
    'with-cache': Flags.boolean({ summary: 'Read index files and trees from the local cache of a remote repository (faster, but trusts the cached copies).' }),
  };

  async run(): Promise<CheckResult> {
    if (kubeRequested(this.argv)) return runInCluster(this, 'check') as Promise<never>;
    const { flags } = await this.parse(Check);
    if (flags['read-data-subset'] !== undefined) parseReadDataSubset(flags['read-data-subset']);
    const settings = await this.settings();
    const repo = await openRepositoryFromSettings(settings);
    // Like restic's check: everything is read from the repository itself, never from the local
    // cache (a good cached copy would hide a damaged or missing index file or tree pack).
    if (!flags['with-cache']) repo.cache = undefined;
    let result: CheckResult;
    // Snapshot and index files are read while the lock is taken (it waits 200 ms before its recheck).
    const prefetched = flags['no-lock'] ? undefined : new MetadataPrefetch(repo);
    try {
      const go = () => check(repo, { readData: flags['read-data'], readDataSubset: flags['read-data-subset'], progress: this.progress('check'), signal: this.abortSignal, prefetched });
      result = flags['no-lock'] ? await go() : await withRepoLock((h) => this.onInterrupt(h), repo, { exclusive: true, retryMs: settings.retryLockMs }, go);
    } finally {
      prefetched?.stop();
      await prefetched?.done;
      await repo.backend.close();
    }
    if (!this.jsonEnabled()) {
      for (const h of result.hints) this.log(`hint: ${h.message}`);
      for (const e of result.errors) this.log(`error: ${e.message}`);
      this.log(
        `checked ${result.snapshots} snapshots, ${result.indexFiles} index files, ${result.packs} packs, ${result.trees} trees` +
          (result.packsRead ? `; read ${result.packsRead} packs (${formatBytes(result.bytesRead)})` : ''),
      );
      this.log(result.damaged ? `repository is damaged: ${result.errors.length} error(s)` : 'no errors were found');
    }
    if (result.damaged) {
      if (this.jsonEnabled()) this.logJson(result);
      else this.warn(`repository contains ${result.errors.length} error(s)`);
      this.exit(EXIT_CODES.DAMAGED);
    }
    return result;
  }
}
