import { DmctlCommand } from '../../base-command.js';
import { UsageError } from '../../core/errors.js';
import { runInCluster, serverKubeFlags } from '../../kube/cli.js';

export default class ServerStop extends DmctlCommand {
  static override summary = 'Stop a server started with `server start --kube`: delete its Deployment, Service, ConfigMap and Secrets.';
  static override description = 'Only objects labelled app.kubernetes.io/managed-by=dmctl are deleted; the repository itself is untouched. A server started outside a cluster is stopped with SIGTERM.';
  static override examples = [
    { description: 'Remove the server "dm" from the namespace "backup":', command: '<%= config.bin %> server stop --kube --name dm --namespace backup' },
  ];
  static override flags = { ...serverKubeFlags };

  async run(): Promise<unknown> {
    const { flags } = await this.parse(ServerStop);
    if (!flags.kube) throw new UsageError('server stop works with --kube only', 'stop a server running outside a cluster with SIGTERM (kill PID)');
    return runInCluster(this, 'server-stop');
  }
}
