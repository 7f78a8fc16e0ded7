// Human renderings of operation results. Backup summaries use restic's wording on purpose: Kanister
// functions and existing scripts parse "snapshot X saved", "processed N files, X in" and "Added to the repo: X".
import type { BackupSummary } from '../archiver/archiver.js';
import { formatBytes, formatClock } from './format.js';

export function backupSummaryLines(s: BackupSummary): string[] {
  const pad = (n: number) => String(n).padStart(5);
  const lines: string[] = [];
  lines.push(`Files:        ${pad(s.filesNew)} new, ${pad(s.filesChanged)} changed, ${pad(s.filesUnmodified)} unmodified`);
  if (s.dirsNew + s.dirsChanged + s.dirsUnmodified > 0) {
    lines.push(`Dirs:         ${pad(s.dirsNew)} new, ${pad(s.dirsChanged)} changed, ${pad(s.dirsUnmodified)} unmodified`);
  }
  if (s.snapshotId) lines.push(`Added to the repo: ${formatBytes(s.dataAdded)} (${formatBytes(s.dataAddedPacked)} stored)`);
  else lines.push(`Would add to the repo: ${formatBytes(s.dataAdded)} (${formatBytes(s.dataAddedPacked)} stored); dry run, nothing was written`);
  lines.push('');
  lines.push(`processed ${s.totalFilesProcessed} files, ${formatBytes(s.totalBytesProcessed)} in ${formatClock(s.durationMs)}`);
  if (s.snapshotId) lines.push(`snapshot ${s.shortId} saved`);
  return lines;
}

/** The value of the Kanister phase output for a backup: kopia's SnapshotInfo shape plus counts. */
export function backupOutputValue(s: BackupSummary): string {
  return JSON.stringify({
    id: s.snapshotId,
    shortId: s.shortId,
    logicalSize: s.totalBytesProcessed,
    physicalSize: s.dataAddedPacked,
    fileCount: s.totalFilesProcessed,
    time: s.time,
  });
}
