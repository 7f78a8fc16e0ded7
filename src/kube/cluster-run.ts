// The implementation of cluster mode behind src/kube/cli.ts (loaded only when --kube is used, since
// @kubernetes/client-node costs about a second and 80 MB to load). Presentation glue of cluster mode (the only file under src/kube that knows oclif and writes to the terminal):
// the --kube flags the commands spread into their own, and runInCluster(), which a command calls from the top of
// run() when --kube is given. It re-parses the command line with the command's flags made optional (a path or
// --target is not needed when the claim is the source), builds the objects, and either prints them (--dry-run,
// -o yaml|json) or runs them, streaming the pod log to stderr as progress and rendering the result.
import { Flags, type Command } from '@oclif/core';
import * as k8s from '@kubernetes/client-node';
import { promises as fsp } from 'node:fs';
import { DmctlError, EXIT_CODES, UsageError } from '../core/errors.js';
import type { ProgressFn } from '../core/progress.js';
import { phaseOutputLine } from '../kanister/output.js';
import { readSecretFile } from '../server/cli-support.js';
import { KubeClient, type KObject } from './client.js';
import { contractSettings } from './datamover.js';
import { KubeError } from './errors.js';
import { DEFAULT_IMAGE, datamoverPod, dnsName, dumpPod, maintenancePod, randomSuffix, REPO_MOUNT, rbacRole, repoSecret, repoSecretName, serverNames, type PodObj, type RepoAccess, type ServerRef } from './manifests.js';
import { collectStorageEnv, locationHasCredentials, providerOf } from './storage-env.js';
import { RESULT_MARKER, runPod, type PodOutcome } from './pods.js';
import { clusterServerStatus, editClusterUser, listClusterUsers, refreshClusterServer, serverRef, serverStartObjects, startServerInCluster, stopClusterServer } from './server.js';

import type { KubeOp } from './cli.js';

function parseDurationMs(text: string | undefined, dflt: number): number {
  if (!text) return dflt;
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (!m) throw new UsageError(`invalid --timeout ${text}`, 'use e.g. 90s, 5m');
  const n = Number(m[1]);
  return Math.round(n * ({ ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] ?? 's'] ?? 1000));
}

type AnyFlags = Record<string, unknown>;
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Loose = any;

interface Io {
  log(line: string): void;
  line(line: string): void;
  progress: ProgressFn;
  json: boolean;
  quiet: boolean;
}

function ioFor(cmd: Command, flags: AnyFlags): Io {
  const c = cmd as Loose;
  const json = typeof c.jsonEnabled === 'function' ? Boolean(c.jsonEnabled()) : false;
  const quiet = Boolean(flags.quiet);
  const progress: ProgressFn =
    typeof c.progress === 'function'
      ? c.progress('kube')
      : (ev) => {
          if (!quiet && ev.item) process.stderr.write(`${ev.phase}: ${ev.item}\n`);
        };
  return {
    log: (l) => cmd.log(l),
    line: (l) => {
      if (!quiet) process.stderr.write(l + '\n');
    },
    progress,
    json,
    quiet,
  };
}

/** Secrets in --dry-run output: every `data` value redacted (placeholders in stringData say where they come from). */
function redact(o: KObject): KObject {
  if (o.kind !== 'Secret' || !o.data) return o;
  const { data, ...rest } = o as KObject & { data: Record<string, string>; stringData?: Record<string, string> };
  return { ...rest, stringData: { ...Object.fromEntries(Object.keys(data).map((k) => [k, '<redacted>'])), ...(rest.stringData ?? {}) } } as KObject;
}

function printObjects(objs0: KObject[], format: string | undefined): void {
  const objs = objs0.map(redact);
  if (format === 'json') process.stdout.write(JSON.stringify(objs.length === 1 ? objs[0] : { apiVersion: 'v1', kind: 'List', items: objs }, null, 2) + '\n');
  else process.stdout.write(objs.map((o) => k8s.dumpYaml(o)).join('---\n'));
}

async function podResult(out: PodOutcome, what: string): Promise<unknown> {
  if (out.phase !== 'Succeeded' || out.exitCode !== 0) {
    const last = [...out.tail].reverse().find((l) => /^dmctl: |error|Error/.test(l)) ?? out.tail[out.tail.length - 1] ?? '';
    const known = Object.values(EXIT_CODES) as number[];
    throw new DmctlError('kube-pod-failed', `${what} pod ${out.pod} failed (exit ${out.exitCode})${last ? `: ${last.replace(/^dmctl: /, '')}` : ''}`, {
      hint: out.kept ? `the pod was kept: kubectl logs ${out.pod}` : 'the pod log is above; --keep-pod keeps the pod',
      exitCode: (known.includes(out.exitCode) ? out.exitCode : EXIT_CODES.FAILURE) as 1,
    });
  }
  return out.result;
}

/** A location as a pod sees it: relative paths and no --repo are on the claim mounted at REPO_MOUNT. */
function podLocation(repo: string | undefined, claim: string | undefined, what: string): string {
  if (claim) {
    if (!repo) return REPO_MOUNT;
    if (providerOf(repo) !== 'local') throw new UsageError(`--repo ${repo} is a URL: --repo-pvc makes no sense with it`, 'use --repo-pvc for a repository on a claim, --repo URL for cloud storage');
    return repo.startsWith('/') ? repo : `${REPO_MOUNT}/${repo.replace(/^\.\/+/, '')}`.replace(/\/+$/, '');
  }
  if (!repo) throw new UsageError(`--kube ${what} needs --server NAME, or --repo LOCATION (a URL, or a path with --repo-pvc CLAIM)`);
  if (providerOf(repo) === 'local') throw new UsageError(`--repo ${repo}: a local path needs --repo-pvc CLAIM (the claim holding it, mounted at ${REPO_MOUNT})`, 'or use a cloud URL (s3:, azure:, gs:, rest:)');
  return repo;
}

/** The repository password for a pod's Secret: --password-file, DM_PASSWORD_FILE, DM_PASSWORD (never argv). */
async function repoPassword(flags: AnyFlags, dry: boolean): Promise<string> {
  const file = (flags['password-file'] as string | undefined) ?? process.env.DM_PASSWORD_FILE;
  if (dry) return `<redacted: the repository password${file ? ` from ${file}` : ''}>`;
  if (file) return readSecretFile(file, 'password');
  if (process.env.DM_PASSWORD) return process.env.DM_PASSWORD;
  throw new UsageError('--kube with --repo needs --password-file FILE (the repository password)', 'it goes into a short-lived Secret of the pod, deleted with it');
}

/** Straight to a repository: the pod's RepoAccess and its short-lived Secret. */
async function repoTarget(flags: AnyFlags, ns: string, pod: string, what: string, dry: boolean): Promise<{ access: RepoAccess; secret: KObject }> {
  const claim = flags['repo-pvc'] as string | undefined;
  const location = podLocation(flags.repo as string | undefined, claim, what);
  const password = await repoPassword(flags, dry);
  const storage = await collectStorageEnv(location, (flags['storage-env'] as string[] | undefined) ?? [], { placeholders: dry });
  const secret = repoSecretName(pod);
  const inSecret = locationHasCredentials(location);
  const access: RepoAccess = { secret, location, locationInSecret: inSecret, claim, envKeys: Object.keys(storage.env), fileKeys: Object.keys(storage.files) };
  const obj = repoSecret({ name: secret, namespace: ns, pod, password, location: inSecret ? (dry ? '<redacted: the repository URL>' : location) : undefined, env: storage.env, files: storage.files, placeholders: dry });
  return { access, secret: obj as unknown as KObject };
}

function streamCommand(cmd: Command): string[] {
  const sep = cmd.argv.indexOf('--');
  return sep >= 0 ? cmd.argv.slice(sep + 1) : [];
}

/** Runs a command in the cluster. `cmd` is the oclif command whose run() called this. */
export async function runInCluster(cmd: Command, op: KubeOp): Promise<unknown> {
  const ctor = cmd.constructor as typeof Command & { flags?: Record<string, Loose>; args?: Record<string, Loose>; baseFlags?: Loose; enableJsonFlag?: boolean };
  const relax = (o: Record<string, Loose> | undefined) => Object.fromEntries(Object.entries(o ?? {}).map(([k, v]) => [k, { ...v, required: false, ...(k === 'password-file' ? { dependsOn: undefined } : {}) }]));
  const parsed = await (cmd as Loose).parse({ flags: relax(ctor.flags), baseFlags: ctor.baseFlags, args: relax(ctor.args), strict: false, enableJsonFlag: ctor.enableJsonFlag });
  const flags = parsed.flags as AnyFlags;
  const args = parsed.args as AnyFlags;
  const io = ioFor(cmd, flags);
  try {
    return await dispatch(cmd, op, flags, args, io);
  } catch (err) {
    if (err instanceof DmctlError && !(typeof (cmd as Loose).settings === 'function')) {
      // Plain oclif commands (the server topic) print errors the way their own code does.
      cmd.error(err.message + (err.hint ? `\nhint: ${err.hint}` : ''), { exit: err.exitCode });
    }
    throw err;
  }
}

async function dispatch(cmd: Command, op: KubeOp, flags: AnyFlags, args: AnyFlags, io: Io): Promise<unknown> {
  const target = { kubeconfig: flags.kubeconfig as string | undefined, context: flags.context as string | undefined, namespace: flags.namespace as string | undefined };
  const maintenance = op === 'forget' || op === 'prune' || op === 'check';
  const dry = !maintenance && (Boolean(flags['dry-run']) || flags.output !== undefined);
  const timeoutMs = parseDurationMs(flags.timeout as string | undefined, 300_000);
  const image = (flags.image as string | undefined) ?? process.env.DM_IMAGE ?? DEFAULT_IMAGE;
  const memoryLimit = flags['memory-limit'] as string | undefined;
  const signal = (cmd as Loose).abortSignal as AbortSignal | undefined;

  // The Role needs no cluster.
  const client = new KubeClient(target);
  const ns = client.namespace;
  const needName = () => {
    const n = flags.name as string | undefined;
    if (!n) throw new UsageError('--kube needs --name NAME (the server)', `e.g. dmctl ${cmd.id?.replace(/:/g, ' ')} --kube --name dm`);
    if (dnsName(n) !== n || n.length > 50) throw new UsageError(`invalid --name ${n}`, 'lowercase letters, digits and -, up to 50 characters');
    return n;
  };
  const needServer = async (): Promise<ServerRef> => {
    const s = flags.server as string | undefined;
    if (!s) throw new UsageError('--kube needs --server NAME, or --repo LOCATION (a URL, or a path with --repo-pvc CLAIM)', 'the dmctl server (see `dmctl server start --kube`) or the repository the pod stores into');
    if (dry) return { name: s, namespace: ns, clientId: (flags.user as string | undefined) ?? 'USER', fingerprint: '<fingerprint of the server certificate>' };
    return serverRef(client, s, flags.user as string | undefined);
  };
  /** Where a pod stores: a server (--server) or straight a repository (--repo / --repo-pvc, with a short-lived Secret). */
  const storeTarget = async (pod: string, what: string): Promise<{ server?: ServerRef; repo?: RepoAccess; companions: KObject[]; claims: string[] }> => {
    const direct = flags.repo !== undefined || flags['repo-pvc'] !== undefined;
    if (direct && flags.server) throw new UsageError('--server and --repo/--repo-pvc exclude each other', 'the pod stores either into a dmctl server or straight into a repository');
    if (!direct) return { server: await needServer(), companions: [], claims: [] };
    const t = await repoTarget(flags, ns, pod, what, dry);
    return { repo: t.access, companions: [t.secret], claims: t.access.claim ? [t.access.claim] : [] };
  };
  const runAndReport = async (pod: PodObj, what: string, claims: string[], opts: { container?: string; side?: string[]; companions?: KObject[] } = {}): Promise<unknown> => {
    if (dry) {
      printObjects([...(opts.companions ?? []), pod as unknown as KObject], flags.output as string | undefined);
      return undefined;
    }
    const main = opts.container ?? pod.spec!.containers[pod.spec!.containers.length - 1]!.name;
    const running = runPod(client, pod, {
      container: main,
      sideContainers: opts.side,
      companions: opts.companions,
      claims,
      keepPod: Boolean(flags['keep-pod']),
      signal,
      startTimeoutMs: timeoutMs,
      progress: io.progress,
      onLine: (l, c) => io.line(c === main ? `${pod.metadata.name}: ${l}` : `${pod.metadata.name}/${c}: ${l}`),
    });
    // Ctrl-C: the base command exits once its interrupt handlers are done; this one waits until the pod (and its
    // Secret) are deleted, which runPod does when the abort signal stops it.
    const unregister = typeof (cmd as Loose).onInterrupt === 'function' ? ((cmd as Loose).onInterrupt(() => running.then(() => undefined, () => undefined)) as () => void) : undefined;
    let out: PodOutcome;
    try {
      out = await running;
    } finally {
      unregister?.();
    }
    return podResult(out, what);
  };

  switch (op) {
    case 'backup':
    case 'restore': {
      const claim = flags.pvc as string | undefined;
      if (!claim) throw new UsageError(`--kube ${op} needs --pvc CLAIM`);
      if (claim === flags['repo-pvc']) throw new UsageError(`--pvc and --repo-pvc are the same claim (${claim})`, 'keep the repository on another claim than the data');
      const name = dnsName('dmctl', op, claim.slice(0, 40), randomSuffix());
      const store = await storeTarget(name, op);
      const selector = op === 'backup' ? ((flags.tag as string[] | undefined)?.[0] ?? '') : ((args.snapshot as string | undefined) ?? 'latest');
      const pod = datamoverPod({ name, namespace: ns, image, operation: op, claim, subPath: flags['sub-path'] as string | undefined, selector, host: op === 'backup' ? ((flags.host as string | undefined) ?? `${claim}.${ns}`) : undefined, server: store.server, repo: store.repo, memoryLimit });
      const r = (await runAndReport(pod, op === 'backup' ? 'datamover' : 'restore', [claim, ...store.claims], { companions: store.companions })) as Record<string, unknown> | undefined;
      if (!r) return undefined;
      if (op === 'backup') {
        if (!io.json) io.log(`snapshot ${String(r.shortId ?? r.id)} saved (${r.fileCount} files, ${r.logicalSize} bytes read, ${r.physicalSize} bytes stored)`);
        if (flags['output-name']) process.stdout.write(phaseOutputLine(flags['output-name'] as string, JSON.stringify(r)));
      } else if (!io.json) io.log(`restored snapshot ${String(r.id).slice(0, 8)} into claim ${claim}: ${r.files} files, ${r.bytes} bytes`);
      return r;
    }
    case 'backup-stream':
    case 'restore-stream': {
      const command = streamCommand(cmd);
      if (!command.length) throw new UsageError(`--kube ${op} needs the command after --`, `dmctl ${op} --kube --image IMG ... -- CMD ARGS`);
      const dumpImage = flags.image as string | undefined;
      if (!dumpImage) throw new UsageError(`--kube ${op} needs --image IMG (the image that runs the command)`);
      const name = dnsName('dmctl', op === 'backup-stream' ? 'dump' : 'load', randomSuffix());
      const store = await storeTarget(name, op);
      const pod = dumpPod({
        name,
        namespace: ns,
        image: (flags['dmctl-image'] as string | undefined) ?? process.env.DM_IMAGE ?? DEFAULT_IMAGE,
        dumpImage,
        command,
        operation: op === 'backup-stream' ? 'backup' : 'restore',
        streamName: (flags.name as string | undefined) ?? 'stream',
        selector: (args.snapshot as string | undefined) ?? 'latest',
        server: store.server,
        repo: store.repo,
        memoryLimit,
      });
      const r = (await runAndReport(pod, op === 'backup-stream' ? 'dump' : 'load', store.claims, { container: 'datamover', side: ['dump'], companions: store.companions })) as Record<string, unknown> | undefined;
      if (!r) return undefined;
      if (op === 'backup-stream') {
        if (!io.json) io.log(`snapshot ${String(r.shortId ?? r.id)} saved (${r.logicalSize} bytes)`);
        if (flags['output-name']) process.stdout.write(phaseOutputLine(flags['output-name'] as string, JSON.stringify(r)));
      } else if (!io.json) io.log(`restored snapshot ${String(r.id).slice(0, 8)}: ${r.bytes} bytes into the command`);
      return r;
    }
    case 'forget':
    case 'prune':
    case 'check': {
      const s = flags.server as string | undefined;
      const passthrough = cmd.argv.filter((a, i, all) => {
        if (/^(--(kube|kubeconfig|context|namespace|timeout|server|image|memory-limit|keep-pod|repo|password-file|repo-pvc|storage-env)(=|$)|-r$)/.test(a)) return false;
        const prev = all[i - 1];
        return !(prev && /^(--(kubeconfig|context|namespace|timeout|server|image|memory-limit|repo|password-file|repo-pvc|storage-env)|-r)$/.test(prev));
      });
      if (!s) {
        if (flags.repo === undefined && flags['repo-pvc'] === undefined) throw new UsageError(`--kube ${op} needs --server NAME, or --repo LOCATION (a URL, or a path with --repo-pvc CLAIM)`, 'the maintenance pod runs next to that server\'s storage, or goes straight to the repository');
        const name = dnsName('dmctl', op, 'repo', randomSuffix());
        const t = await repoTarget(flags, ns, name, op, dry);
        const pod = maintenancePod({ name, namespace: ns, image, command: op, args: passthrough, access: t.access, memoryLimit });
        const out = await runAndReport(pod, op, t.access.claim ? [t.access.claim] : [], { companions: [t.secret] });
        return out ?? { ok: true };
      }
      if (flags.repo !== undefined || flags['repo-pvc'] !== undefined) throw new UsageError('--server and --repo/--repo-pvc exclude each other');
      const dep = dry ? undefined : await client.get('apps/v1', 'Deployment', s);
      if (!dry && !dep) throw new KubeError('not-found', `dmctl server ${s} not found in namespace ${ns}`);
      const c = (dep?.spec as Loose)?.template?.spec;
      const container = c?.containers?.[0];
      const repoArg = container?.args?.[container.args.indexOf('--repo') + 1] ?? REPO_MOUNT;
      const claim = c?.volumes?.find((v: Loose) => v.name === 'repo')?.persistentVolumeClaim?.claimName as string | undefined;
      const envKeys = (container?.env ?? []).filter((e: Loose) => e.valueFrom?.secretKeyRef).map((e: Loose) => e.name as string);
      const fileKeys = (container?.env ?? []).filter((e: Loose) => typeof e.value === 'string' && e.value.startsWith(`/etc/secrets/${serverNames(s).storage}/file.`)).map((e: Loose) => e.name as string);
      const pod = maintenancePod({ namespace: ns, image, server: s, command: op, args: passthrough, repo: repoArg, repoClaim: claim, storageEnvKeys: envKeys, storageFileKeys: fileKeys, memoryLimit });
      const out = await runAndReport(pod, op, claim ? [claim] : []);
      return out ?? { ok: true };
    }
    case 'server-start': {
      const name = needName();
      const pwFile = (flags['password-file'] as string | undefined) ?? process.env.DM_PASSWORD_FILE;
      if (!pwFile && !dry) throw new UsageError('--kube server start needs --password-file FILE (the repository password)', 'the server uses it only to manage users\' key files');
      const repoPassword = pwFile ? await readSecretFile(pwFile, 'password') : '<repository password>';
      const repoClaim = flags['repo-pvc'] as string | undefined;
      if (!flags.repo && !repoClaim) throw new UsageError('--kube server start needs --repo LOCATION or --repo-pvc CLAIM');
      const repo = podLocation(flags.repo as string | undefined, repoClaim, 'server start');
      const storage = await collectStorageEnv(repo, (flags['storage-env'] as string[] | undefined) ?? []);
      const storageEnv = storage.env;
      const storageFiles = storage.files;
      const tlsCert = flags['tls-cert-file'] ? await fsp.readFile(flags['tls-cert-file'] as string, 'utf8') : undefined;
      const tlsKey = flags['tls-key-file'] ? await fsp.readFile(flags['tls-key-file'] as string, 'utf8') : undefined;
      const input = { name, image, repo, repoClaim, repoPassword, storageEnv, storageFiles, tlsCert, tlsKey, privateRepos: flags['private-repos'] as boolean | undefined, clientRole: flags['client-credentials-role'] as 'append' | undefined, memoryLimit };
      if (dry) {
        printObjects(await serverStartObjects({ namespace: ns, get: client.get.bind(client) }, input), flags.output as string | undefined);
        return undefined;
      }
      const info = await startServerInCluster(client, input, { progress: io.progress, timeoutMs, signal });
      if (!io.json) {
        io.log(`server ${info.name} ready in namespace ${info.namespace}`);
        io.log(`address:     ${info.url}`);
        io.log(`fingerprint: ${info.fingerprint}`);
      }
      return info;
    }
    case 'server-status': {
      const st = await clusterServerStatus(client, needName());
      if (!io.json) {
        io.log(`server:      ${st.name} (namespace ${st.namespace})`);
        io.log(`address:     ${st.url}`);
        io.log(`fingerprint: ${st.fingerprint}`);
        io.log(`ready:       ${st.ready ? 'yes' : 'no'}   healthy: ${st.healthy ? 'yes' : 'no'}   serving: ${st.serverReady ? 'yes' : 'no'}`);
        for (const p of st.pods) io.log(`pod:         ${p.name} ${p.phase}${p.ready ? ' ready' : ''}, ${p.restarts} restarts`);
        io.log(`users:       ${st.users.join(', ') || '(none)'}`);
      }
      if (!st.ready || !st.healthy) throw new KubeError('not-ready', `server ${st.name} is not ready`, `kubectl describe -n ${st.namespace} deployment/${st.name}`);
      return st;
    }
    case 'server-refresh': {
      const info = await refreshClusterServer(client, needName(), { progress: io.progress, timeoutMs });
      if (!io.json) io.log(`server ${info.name} restarted and ready (fingerprint ${info.fingerprint})`);
      return info;
    }
    case 'server-stop': {
      const name = needName();
      if (dry) {
        const n = serverNames(name);
        io.log(`would delete deployment/${n.deployment} service/${n.service} configmap/${n.config} secret/${n.users} secret/${n.storage} secret/${n.tls}`);
        return undefined;
      }
      const r = await stopClusterServer(client, name, { progress: io.progress });
      if (!io.json) io.log(`deleted ${r.deleted.join(' ')}`);
      return r;
    }
    case 'users-add':
    case 'users-set':
    case 'users-remove': {
      const name = needName();
      const user = args.user as string;
      const action = op.slice('users-'.length) as 'add' | 'set' | 'remove';
      const pw = action === 'remove' ? undefined : flags['password-file'] ? await readSecretFile(flags['password-file'] as string, 'password') : undefined;
      const r = await editClusterUser(client, name, action, user, pw);
      if (!io.json) io.log(`${action === 'add' ? 'added' : action === 'set' ? 'changed' : 'removed'} user ${user} on server ${name} (the server picks it up when the kubelet syncs the secret)`);
      return r;
    }
    case 'users-list': {
      const users = await listClusterUsers(client, needName());
      if (!io.json) for (const u of users) io.log(u);
      return users.map((u) => ({ name: u }));
    }
  }
}

/** The Role `dmctl kube rbac` prints. */
export function rbacYaml(name: string, namespace: string): string {
  return k8s.dumpYaml(rbacRole(name, namespace));
}
