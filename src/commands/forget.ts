import { Args, Flags } from '@oclif/core';
import { DmctlCommand, repoFlags } from '../base-command.js';
import { openRepositoryFromSettings } from '../config/open-repo.js';
import { mapLimit } from '../core/limit.js';
import { UsageError } from '../core/errors.js';
import { ForgetGroupJson, ForgetPolicy, ForgetSnapshotJson, PolicySnapshot, forgetPlan, isEmptyPolicy, parseGroupBy, parseTagList } from '../maintenance/forget-policy.js';
import { prune, PruneResult } from '../maintenance/prune.js';
import { resolveSnapshotId } from '../repository/snapshots.js';
import { Repository } from '../repository/repository.js';
import { table } from '../ui/format.js';
import { pruneFlags, pruneOptionsFrom, pruneReportLines, withHuman, withRepoLock, PruneCommandResult } from './prune.js';
import { kubeRequested, maintenanceKubeFlags, runInCluster } from '../kube/cli.js';

/** Every snapshot as the policy sees it: the stored JSON (time string untouched) plus its ID. */
async function loadPolicySnapshots(repo: Repository): Promise<PolicySnapshot[]> {
  const ids = await repo.listSnapshotFiles();
  return mapLimit(ids, Math.max(4, repo.backend.connections), async (id) => {
    const json = JSON.parse((await repo.loadSnapshotJson(id)).toString('utf8')) as Record<string, unknown>;
    return { ...json, id } as PolicySnapshot;
  });
}

function localTime(rfc: string): string {
  // The stored wall clock (in the snapshot's own offset), like restic's table.
  const m = /^(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)/.exec(rfc);
  return m ? `${m[1]} ${m[2]}` : rfc;
}

function groupTitle(g: ForgetGroupJson): string {
  const parts: string[] = [];
  if (g.host) parts.push(`host [${g.host}]`);
  if (g.paths) parts.push(`paths [${g.paths.join(', ')}]`);
  if (g.tags) parts.push(`tags [${g.tags.join(', ')}]`);
  return parts.length ? `snapshots for (${parts.join(', ')}):` : 'snapshots:';
}

function snapshotRows(list: ForgetSnapshotJson[], reasons?: Map<string, string[]>): string[] {
  const rows = [...list].reverse().map((s) => {
    const r = [s.short_id, localTime(s.time), s.hostname ?? '', (s.tags ?? []).join(',')];
    if (reasons) r.push((reasons.get(s.id) ?? []).join(', '));
    r.push((s.paths ?? []).join(', '));
    return r;
  });
  const cols = ['ID', 'Time', 'Host', 'Tags', ...(reasons ? ['Reasons'] : []), 'Paths'].map((header) => ({ header }));
  return table(cols, rows);
}

export default class Forget extends DmctlCommand {
  static override summary = 'Remove snapshots, by ID or by a retention policy.';
  static override description = `With IDs, removes exactly those snapshots. Otherwise groups the snapshots (--group-by, default host,paths), applies the --keep-* policy to each group exactly as restic 0.14 does (calendar buckets in each snapshot's own time zone) and removes the rest. Removing a snapshot deletes only its snapshot file: run prune (or pass --prune) to free the space.

--json prints the groups with keep, remove and reasons in the shape \`restic forget --json\` prints. Needs an exclusive lock.`;
  static override examples = [
    { description: 'Keep the last 7 daily and 4 weekly snapshots of each host and path set, then prune:', command: '<%= config.bin %> <%= command.id %> --keep-daily 7 --keep-weekly 4 --prune' },
    { description: 'See what a policy would remove, as JSON:', command: '<%= config.bin %> <%= command.id %> --keep-last 3 --dry-run --json' },
    { description: 'Remove two snapshots by ID:', command: '<%= config.bin %> <%= command.id %> 4f2a9c1e 77b3d0aa' },
  ];
  static override strict = false;
  static override args = { id: Args.string({ description: 'Snapshot IDs (or unique prefixes) to remove.', required: false }) };
  static override flags = {
    ...maintenanceKubeFlags,
    ...repoFlags,
    'keep-last': Flags.integer({ char: 'l', summary: 'Keep the last N snapshots.', helpValue: 'N' }),
    'keep-hourly': Flags.integer({ char: 'H', summary: 'Keep the last N hourly snapshots.', helpValue: 'N' }),
    'keep-daily': Flags.integer({ char: 'd', summary: 'Keep the last N daily snapshots.', helpValue: 'N' }),
    'keep-weekly': Flags.integer({ char: 'w', summary: 'Keep the last N weekly snapshots.', helpValue: 'N' }),
    'keep-monthly': Flags.integer({ char: 'm', summary: 'Keep the last N monthly snapshots.', helpValue: 'N' }),
    'keep-yearly': Flags.integer({ char: 'y', summary: 'Keep the last N yearly snapshots.', helpValue: 'N' }),
    'keep-within': Flags.string({ summary: 'Keep snapshots newer than DURATION before the latest one (e.g. 1y5m7d2h).', helpValue: 'DURATION' }),
    'keep-within-hourly': Flags.string({ summary: 'Keep hourly snapshots within DURATION of the latest one.', helpValue: 'DURATION' }),
    'keep-within-daily': Flags.string({ summary: 'Keep daily snapshots within DURATION of the latest one.', helpValue: 'DURATION' }),
    'keep-within-weekly': Flags.string({ summary: 'Keep weekly snapshots within DURATION of the latest one.', helpValue: 'DURATION' }),
    'keep-within-monthly': Flags.string({ summary: 'Keep monthly snapshots within DURATION of the latest one.', helpValue: 'DURATION' }),
    'keep-within-yearly': Flags.string({ summary: 'Keep yearly snapshots within DURATION of the latest one.', helpValue: 'DURATION' }),
    'keep-tag': Flags.string({ summary: 'Keep snapshots with these tags ("a,b" = both; repeatable).', multiple: true, helpValue: 'TAGS' }),
    host: Flags.string({ summary: 'Only consider snapshots of this host (repeatable).', multiple: true, helpValue: 'NAME' }),
    tag: Flags.string({ summary: 'Only consider snapshots with these tags ("a,b" = both; repeatable = either).', multiple: true, helpValue: 'TAGS' }),
    path: Flags.string({ summary: 'Only consider snapshots that include this path (repeatable = all).', multiple: true, helpValue: 'PATH' }),
    'group-by': Flags.string({ char: 'g', summary: 'Group snapshots by host, paths and/or tags ("" = one group).', default: 'host,paths', helpValue: 'GROUPS' }),
    'dry-run': Flags.boolean({ char: 'n', summary: 'Only show what would be removed.' }),
    prune: Flags.boolean({ summary: 'Run prune afterwards (takes the prune flags).' }),
    ...pruneFlags,
  };

  async run(): Promise<ForgetGroupJson[] | { removed: string[] } | { groups: ForgetGroupJson[] | { removed: string[] }; prune: PruneCommandResult }> {
    if (kubeRequested(this.argv)) return runInCluster(this, 'forget') as Promise<never>;
    const { argv, flags } = await this.parse(Forget);
    const ids = argv as string[];
    const policy: ForgetPolicy = {
      last: flags['keep-last'], hourly: flags['keep-hourly'], daily: flags['keep-daily'], weekly: flags['keep-weekly'],
      monthly: flags['keep-monthly'], yearly: flags['keep-yearly'], within: flags['keep-within'],
      withinHourly: flags['keep-within-hourly'], withinDaily: flags['keep-within-daily'], withinWeekly: flags['keep-within-weekly'],
      withinMonthly: flags['keep-within-monthly'], withinYearly: flags['keep-within-yearly'],
      tags: flags['keep-tag']?.map(parseTagList),
    };
    const policySet = !isEmptyPolicy(policy);
    if (ids.length && policySet) throw new UsageError('give either snapshot IDs or a --keep-* policy, not both');
    const groupBy = parseGroupBy(flags['group-by']);
    const pruneOpts = flags.prune ? pruneOptionsFrom({ ...flags, 'dry-run': flags['dry-run'] }) : undefined;
    const settings = await this.settings();
    const repo = await openRepositoryFromSettings(settings);
    const json = this.jsonEnabled();
    try {
      // With --prune the index loads while the lock waits out its recheck (prune needs it anyway).
      const lockOpts = { exclusive: true, retryMs: settings.retryLockMs, loadIndex: pruneOpts ? this.progress('prune') : undefined };
      return await withRepoLock((h) => this.onInterrupt(h), repo, lockOpts, async () => {
        let out: ForgetGroupJson[] | { removed: string[] };
        let toRemove: string[] = [];
        if (ids.length) {
          toRemove = [...new Set(await Promise.all(ids.map((p) => resolveSnapshotId(repo, p))))];
          out = { removed: toRemove };
        } else {
          const snaps = await loadPolicySnapshots(repo);
          const groups = forgetPlan(snaps, policy, { hosts: flags.host, tags: flags.tag?.map(parseTagList), paths: flags.path }, groupBy);
          out = groups;
          for (const g of groups) for (const s of g.remove ?? []) toRemove.push(s.id);
          if (!json) this.printPlan(policySet, groups);
        }
        if (!flags['dry-run']) {
          let done = 0;
          const progress = this.progress('forget');
          await mapLimit(toRemove, Math.max(2, repo.backend.connections), async (id) => {
            await repo.backend.remove('snapshots', id);
            progress({ phase: 'forget', filesDone: ++done, filesTotal: toRemove.length });
          });
        }
        if (!json && ids.length) for (const id of toRemove) this.log(`${flags['dry-run'] ? 'would remove' : 'removed'} snapshot ${id.slice(0, 8)}`);
        if (!json && !policySet && !ids.length) this.log('no policy was specified, no snapshots will be removed');
        if (!pruneOpts) return out;
        const r: PruneResult = await prune(repo, { ...pruneOpts, locked: true, progress: this.progress('prune'), signal: this.abortSignal });
        if (!json) for (const l of pruneReportLines(r)) this.log(l);
        if (flags['output-name']) this.phaseOutput(flags['output-name'], `${r.spaceFreed} B`);
        return { groups: out, prune: withHuman(r) };
      });
    } finally {
      await repo.backend.close();
    }
  }

  private printPlan(policySet: boolean, groups: ForgetGroupJson[]): void {
    if (!policySet) return;
    for (const g of groups) {
      this.log(groupTitle(g));
      const keep = g.keep ?? [];
      const remove = g.remove ?? [];
      const reasons = new Map<string, string[]>();
      (g.reasons ?? []).forEach((r, i) => reasons.set(keep[i]?.id ?? '', r.matches));
      if (keep.length) {
        this.log(`keep ${keep.length} snapshots:`);
        for (const l of snapshotRows(keep, reasons)) this.log(l);
        this.log('');
      }
      if (remove.length) {
        this.log(`remove ${remove.length} snapshots:`);
        for (const l of snapshotRows(remove)) this.log(l);
        this.log('');
      }
    }
  }
}
