// Presentation glue of cluster mode: the --kube flags the commands spread into their own, and the
// entry points a command calls when --kube is given. Everything heavy (the Kubernetes client library,
// manifests, pod handling) lives in cluster-run.ts and is imported only then: ordinary commands must
// not pay for loading @kubernetes/client-node.
import { Flags, type Command } from '@oclif/core';
import { UsageError } from '../core/errors.js';
import { DEFAULT_IMAGE } from './constants.js';
import { RESULT_MARKER } from './pods.js';

const KUBE = 'KUBERNETES';

/** Connection to a cluster: every --kube command has these. */
export const clusterFlags = {
  kube: Flags.boolean({ summary: 'Run in a Kubernetes cluster, through its API (pods, never exec).', helpGroup: KUBE }),
  kubeconfig: Flags.string({ summary: 'Kubeconfig file (default KUBECONFIG, ~/.kube/config, or the in-cluster service account).', helpValue: 'FILE', helpGroup: KUBE }),
  context: Flags.string({ summary: 'Kubeconfig context.', helpValue: 'NAME', helpGroup: KUBE }),
  namespace: Flags.string({ char: 'n', summary: 'Namespace (default: the context\'s).', helpValue: 'NS', helpGroup: KUBE }),
  timeout: Flags.string({ summary: 'How long a pod may take to start, or the server to become ready (default 5m).', helpValue: 'DURATION', helpGroup: KUBE }),
  'dry-run': Flags.boolean({ summary: 'With --kube: print the objects (YAML) instead of creating them.', helpGroup: KUBE }),
  output: Flags.string({ char: 'o', summary: 'With --kube --dry-run: yaml or json.', options: ['yaml', 'json'], helpGroup: KUBE }),
  image: Flags.string({ summary: `With --kube: the dmctl image (default ${DEFAULT_IMAGE}).`, helpValue: 'IMAGE', helpGroup: KUBE }),
  'memory-limit': Flags.string({ summary: 'With --kube: memory limit of the pod (e.g. 1Gi).', helpValue: 'QUANTITY', helpGroup: KUBE }),
};

/** A repository on a claim, and storage credentials copied into the cluster (server start, and pods that skip the server). */
const repoKubeFlags = {
  'repo-pvc': Flags.string({ summary: 'With --kube: claim holding a local repository, mounted at /srv/repo (--repo is then a path on it).', helpValue: 'CLAIM', helpGroup: KUBE }),
  'storage-env': Flags.string({ summary: 'With --kube: also copy this variable of your environment into the cluster\'s Secret (storage credentials; repeatable).', multiple: true, helpValue: 'VAR', helpGroup: KUBE }),
};

/** Datamover pod commands (backup, restore, backup-stream, restore-stream). */
export const podFlags = {
  ...clusterFlags,
  ...repoKubeFlags,
  pvc: Flags.string({ summary: 'With --kube: the PersistentVolumeClaim to back up or restore into.', helpValue: 'CLAIM', helpGroup: KUBE }),
  'sub-path': Flags.string({ summary: 'With --kube: only this folder of the claim.', helpValue: 'PATH', helpGroup: KUBE }),
  server: Flags.string({ summary: 'With --kube: the dmctl server (started with `server start --kube --name`) to store into; without it, --repo/--repo-pvc go straight to a repository.', helpValue: 'NAME', helpGroup: KUBE }),
  user: Flags.string({ summary: 'With --kube: the server user whose credential the pod uses (default: the first).', helpValue: 'USER', helpGroup: KUBE }),
  'keep-pod': Flags.boolean({ summary: 'With --kube: keep the pod after it ends (for debugging).', helpGroup: KUBE }),
  'dmctl-image': Flags.string({ summary: 'With --kube on stream commands: the dmctl image (--image is the dump command\'s).', helpValue: 'IMAGE', helpGroup: KUBE }),
};

/** `server start|status|refresh|stop|users` in a cluster. */
export const serverKubeFlags = {
  ...clusterFlags,
  name: Flags.string({ summary: 'With --kube: name of the server (its Deployment, Service, Secrets and ConfigMap).', helpValue: 'NAME', helpGroup: KUBE }),
};

export const serverStartKubeFlags = {
  ...serverKubeFlags,
  ...repoKubeFlags,
};

/** forget / prune / check: no short options (-n is their --dry-run) and no --dry-run of our own (theirs goes to the pod). */
export const maintenanceKubeFlags = {
  kube: clusterFlags.kube,
  kubeconfig: clusterFlags.kubeconfig,
  context: clusterFlags.context,
  namespace: Flags.string({ summary: 'With --kube: namespace (default: the context\'s).', helpValue: 'NS', helpGroup: KUBE }),
  timeout: clusterFlags.timeout,
  image: clusterFlags.image,
  'memory-limit': clusterFlags['memory-limit'],
  server: Flags.string({ summary: 'With --kube: run next to the storage of this dmctl server (its Secret and claim).', helpValue: 'NAME', helpGroup: KUBE }),
  'keep-pod': Flags.boolean({ summary: 'With --kube: keep the pod after it ends (for debugging).', helpGroup: KUBE }),
  ...repoKubeFlags,
};

export const datamoverFlags = {
  'credentials-dir': Flags.string({ summary: 'Client credential folder.', default: '/etc/client_credentials', helpValue: 'DIR' }),
};

export type KubeOp =
  | 'backup'
  | 'restore'
  | 'backup-stream'
  | 'restore-stream'
  | 'server-start'
  | 'server-status'
  | 'server-refresh'
  | 'server-stop'
  | 'users-add'
  | 'users-set'
  | 'users-remove'
  | 'users-list'
  | 'forget'
  | 'prune'
  | 'check';

/**
 * Without --kube, a flag that only means something with it would be ignored: refused instead (a
 * `--pvc` or `--namespace` given by mistake must not quietly act on the local machine). `defined`
 * is the command's flag table: a flag the command defines for itself (backup's --dry-run) is not
 * checked.
 */
export function refuseKubeOnlyFlags(defined: Record<string, unknown>, flags: Record<string, unknown>): void {
  for (const [name, def] of Object.entries(podFlags)) {
    if (name === 'kube' || defined[name] !== def) continue;
    const v = flags[name];
    if (v === undefined || v === false || (Array.isArray(v) && v.length === 0)) continue;
    throw new UsageError(`--${name} applies only with --kube`, 'add --kube to run it in the cluster, or leave the flag out');
  }
}

/** True when argv asks for cluster mode (`--kube` before any `--`). */
export function kubeRequested(argv: string[]): boolean {
  const sep = argv.indexOf('--');
  return (sep < 0 ? argv : argv.slice(0, sep)).includes('--kube');
}

/** In-pod: repository settings from the datamover contract (or DM_REPOSITORY), and how long to wait for the server. */
export async function datamoverSettings(flags: { 'credentials-dir': string }) {
  const { podSettings } = await import('./datamover.js');
  return podSettings({ credentialsDir: flags['credentials-dir'] });
}

/** In-pod: the result line the CLI side parses from the pod log. */
export function printResult(obj: unknown): void {
  process.stdout.write(`${RESULT_MARKER}${JSON.stringify(obj)}\n`);
}


/** Runs a command in the cluster (see cluster-run.ts). */
export async function runInCluster(cmd: Command, op: KubeOp): Promise<unknown> {
  return (await import('./cluster-run.js')).runInCluster(cmd, op);
}
