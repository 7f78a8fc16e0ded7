import { Command } from '@oclif/core';
import { runInCluster, serverKubeFlags } from '../../kube/cli.js';

export default class ServerStop extends Command {
  static override enableJsonFlag = true;
  static override summary = 'Stop a server started with `server start --kube`: delete its Deployment, Service, ConfigMap and Secrets.';
  static override description = 'Only objects labelled app.kubernetes.io/managed-by=dmctl are deleted; the repository itself is untouched. A server started outside a cluster is stopped with SIGTERM.';
  static override examples = ['<%= config.bin %> server stop --kube --name dm --namespace backup'];
  static override flags = { ...serverKubeFlags };

  async run(): Promise<unknown> {
    const { flags } = await this.parse(ServerStop);
    if (!flags.kube) this.error('server stop works with --kube only (stop a local server with SIGTERM)', { exit: 2 });
    return runInCluster(this, 'server-stop');
  }
}
