// The seed's datamover client contract, as dmctl runs it inside a pod: PROTOCOLS (at least one it speaks),
// SERVER_URL, SERVER_DATA (JSON: protocol, port, tls, fingerprint), the client credential folder (one file
// `user@host:password`), /etc/config and /etc/secrets/NAME. Operations: backup_files PATH TAG, restore_files PATH
// SNAPSHOT|TAG, backup_stream FILE, restore_stream FILE.
import { spawn } from 'node:child_process';
import { createWriteStream, existsSync, promises as fsp } from 'node:fs';
import path from 'node:path';
import { DmctlError, EXIT_CODES, UsageError } from '../core/errors.js';
import type { ProgressFn } from '../core/progress.js';
import { resolveSettings, type RepoSettings } from '../config/settings.js';
import { openRepositoryFromSettings } from '../config/open-repo.js';
import { backup, type BackupSummary } from '../archiver/archiver.js';
import { backupStream } from '../archiver/stream.js';
import { restore, type RestoreSummary } from '../restorer/restorer.js';
import { dumpFile, type DumpSummary } from '../restorer/dump.js';
import { findSnapshot } from '../repository/snapshots.js';
import { parseCredential } from '../server/users.js';
import { parseProtocols, PROTOCOL_NAMES } from '../server/settings.js';

export const MODES = ['backup_files', 'restore_files', 'backup_stream', 'restore_stream'] as const;
export type Mode = (typeof MODES)[number];

export interface ContractInput {
  credentialsDir: string;
  env?: NodeJS.ProcessEnv;
}

export interface ClientConnection {
  url: string;
  user: string;
  fingerprint?: string;
  protocol: string;
}

/** Checks the contract's environment and reads the credential; returns repository settings for the server. */
export async function contractSettings(i: ContractInput): Promise<{ settings: RepoSettings; connection: ClientConnection }> {
  const env = i.env ?? process.env;
  const protocols = parseProtocols(env.PROTOCOLS ?? '');
  const usable = protocols.find((p) => PROTOCOL_NAMES.includes(p.name));
  if (!usable) {
    throw new DmctlError('unsupported-protocol', protocols.length ? `none of the protocols in PROTOCOLS is supported: ${protocols.map((p) => p.name).join(', ')}` : 'PROTOCOLS is not set', {
      hint: `this datamover speaks ${PROTOCOL_NAMES.join(', ')}`,
      exitCode: EXIT_CODES.USAGE,
    });
  }
  const rawUrl = env.SERVER_URL;
  if (!rawUrl) throw new UsageError('SERVER_URL is not set', 'the datamover pod must name the server: SERVER_URL=https://HOST:PORT/');
  let u: URL;
  try {
    u = new URL(rawUrl);
  } catch {
    throw new UsageError(`SERVER_URL is not a URL: ${rawUrl}`);
  }
  if (usable.port && !u.port) u.port = String(usable.port);
  let fingerprint: string | undefined;
  if (env.SERVER_DATA) {
    try {
      const d = JSON.parse(env.SERVER_DATA) as { fingerprint?: string; protocol?: string };
      fingerprint = d.fingerprint;
      if (d.protocol && !PROTOCOL_NAMES.includes(d.protocol)) throw new UsageError(`SERVER_DATA names protocol ${d.protocol}, which this datamover does not speak`);
    } catch (err) {
      if (err instanceof DmctlError) throw err;
      throw new UsageError('SERVER_DATA is not valid JSON', 'expected {"protocol":..,"port":..,"fingerprint":..}');
    }
  }
  if (u.protocol === 'https:' && !fingerprint) throw new UsageError('SERVER_DATA has no certificate fingerprint', 'the client pins the server certificate; SERVER_DATA must carry "fingerprint"');
  let files: string[];
  try {
    files = (await fsp.readdir(i.credentialsDir)).filter((f) => !f.startsWith('.')).sort();
  } catch (err) {
    throw new UsageError(`cannot read the client credentials folder ${i.credentialsDir}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, 'mount the client Secret there');
  }
  if (!files.length) throw new UsageError(`no client credential in ${i.credentialsDir}`);
  const text = (await fsp.readFile(path.join(i.credentialsDir, files[0]!), 'utf8')).trim();
  const cred = parseCredential(files[0]!, text);
  if (!cred) throw new UsageError(`the client credential ${files[0]} is not user@host:password`);
  u.username = encodeURIComponent(cred.user);
  u.password = encodeURIComponent(cred.password);
  const settings = await resolveSettings(
    { repo: `rest:${u.toString()}`, 'server-cert-fingerprint': fingerprint, 'config-file': path.join(i.credentialsDir, '.no-connection-file') },
    { env: { DM_PASSWORD: cred.password, HOME: env.HOME }, interactive: false },
  );
  return { settings, connection: { url: `${u.protocol}//${u.host}/`, user: cred.user, fingerprint, protocol: usable.name } };
}

/**
 * dmctl's extension of the contract: when DM_REPOSITORY is set (and SERVER_URL is not), the pod goes straight to that
 * repository with DM_PASSWORD_FILE (a mounted Secret) and the storage variables of its environment; there is no
 * server, so nothing to wait for.
 */
export function directRepository(env: NodeJS.ProcessEnv = process.env): boolean {
  return !!env.DM_REPOSITORY && !env.SERVER_URL;
}

/** Settings of a datamover pod: straight to a repository, or through the server of the contract. */
export async function podSettings(i: ContractInput): Promise<{ settings: RepoSettings; connectWaitMs: number }> {
  const env = i.env ?? process.env;
  if (directRepository(env)) {
    const settings = await resolveSettings({ 'config-file': path.join(env.HOME ?? '/tmp', '.no-connection-file') }, { env, interactive: false });
    return { settings, connectWaitMs: 0 };
  }
  return { settings: (await contractSettings(i)).settings, connectWaitMs: 90_000 };
}

/** Opens the repository, waiting while the server does not know the credential yet (secret volumes sync late). */
async function openWithRetry(settings: RepoSettings, progress: ProgressFn, waitMs: number) {
  const deadline = Date.now() + waitMs;
  for (;;) {
    try {
      return await openRepositoryFromSettings(settings);
    } catch (err) {
      const kind = (err as { kind?: string }).kind;
      if (Date.now() >= deadline || (kind !== 'access-denied' && kind !== 'unreachable' && kind !== 'network')) throw err;
      progress({ phase: 'connect', warning: `server not ready for this client yet (${(err as Error).message}); retrying` });
      await new Promise((r) => setTimeout(r, 2000));
    }
  }
}

export interface OpCommon {
  settings: RepoSettings;
  progress: ProgressFn;
  /** How long to wait for the server to accept the credential (ms). */
  connectWaitMs?: number;
  signal?: AbortSignal;
}

export async function backupFiles(o: OpCommon & { path: string; tag?: string; host?: string }): Promise<BackupSummary> {
  if (!existsSync(o.path)) throw new UsageError(`nothing to back up: ${o.path} does not exist`);
  const repo = await openWithRetry(o.settings, o.progress, o.connectWaitMs ?? 90_000);
  try {
    return await backup(repo, { paths: [o.path], tags: o.tag ? [o.tag] : [], host: o.host, progress: o.progress, signal: o.signal });
  } finally {
    await repo.backend.close();
  }
}

/**
 * Restores into PATH the directory the snapshot stored (its first path), so the mount path of the backup pod does
 * not matter. SELECTOR is a snapshot id (prefix), "latest", or a tag (the latest snapshot with it).
 */
export async function restoreFiles(o: OpCommon & { path: string; selector: string }): Promise<RestoreSummary> {
  const repo = await openWithRetry(o.settings, o.progress, o.connectWaitMs ?? 90_000);
  try {
    const isId = o.selector === 'latest' || /^[0-9a-f]{4,64}$/.test(o.selector);
    const snap = await findSnapshot(repo, isId ? o.selector : 'latest', isId ? {} : { tags: [[o.selector]] });
    const root = snap.snapshot.paths?.[0] ?? '/';
    await fsp.mkdir(o.path, { recursive: true });
    const summary = await restore(repo, { snapshot: `${snap.id}:${root}`, target: o.path, progress: o.progress });
    if (summary.errors.length) {
      throw new DmctlError('restore-incomplete', `${summary.errors.length} item(s) could not be restored (first: ${summary.errors[0]!.path}: ${summary.errors[0]!.message})`, { exitCode: EXIT_CODES.DAMAGED });
    }
    return summary;
  } finally {
    await repo.backend.close();
  }
}

async function makeFifo(file: string): Promise<void> {
  if (existsSync(file)) return;
  await new Promise<void>((resolve, reject) => {
    const p = spawn('mkfifo', ['-m', '0600', file], { stdio: 'ignore' });
    p.on('error', (err) => reject(new DmctlError('fifo', `cannot create the pipe ${file}: ${err.message}`)));
    p.on('close', (code) => (code === 0 ? resolve() : reject(new DmctlError('fifo', `cannot create the pipe ${file} (mkfifo exited ${code})`))));
  });
}

/**
 * Stores FILE (a fifo the dump container writes into, or a plain file) as `name`. With a status file, the
 * writer's exit status decides: anything but 0 means no snapshot is written.
 */
export async function backupStreamFile(o: OpCommon & { file: string; name: string; statusFile?: string; tag?: string; host?: string; statusWaitMs?: number }): Promise<BackupSummary> {
  await makeFifo(o.file);
  const repo = await openWithRetry(o.settings, o.progress, o.connectWaitMs ?? 90_000);
  try {
    // `sh` reads the pipe, then waits for the writer's status and exits with it: backupStream's own rule
    // (the command fails ⇒ no snapshot) then applies.
    const waitTenths = Math.ceil((o.statusWaitMs ?? 60_000) / 100);
    const script = o.statusFile
      ? 'cat "$1" || exit 1; n=0; while [ ! -f "$2" ]; do n=$((n+1)); [ $n -gt "$3" ] && { echo "no status from the dump container" >&2; exit 1; }; sleep 0.1; done; s=$(cat "$2"); [ "$s" = 0 ] || echo "the dump command exited with status $s" >&2; exit "$s"'
      : 'exec cat "$1"';
    return await backupStream(repo, {
      name: o.name,
      command: ['sh', '-c', script, 'dmctl-stream', o.file, o.statusFile ?? '', String(waitTenths)],
      tags: o.tag ? [o.tag] : [],
      host: o.host,
      progress: o.progress,
    });
  } finally {
    await repo.backend.close();
  }
}

export async function restoreStreamFile(o: OpCommon & { file: string; selector: string; name?: string }): Promise<DumpSummary> {
  await makeFifo(o.file);
  const repo = await openWithRetry(o.settings, o.progress, o.connectWaitMs ?? 90_000);
  try {
    const out = createWriteStream(o.file);
    const res = await dumpFile(repo, { snapshot: o.selector, name: o.name, output: out, progress: o.progress });
    await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
    return res;
  } finally {
    await repo.backend.close();
  }
}
