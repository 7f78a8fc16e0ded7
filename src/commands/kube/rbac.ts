import { Flags } from '@oclif/core';
import { DmctlCommand } from '../../base-command.js';
import { rbacRole } from '../../kube/manifests.js';
import { rbacYaml } from '../../kube/cluster-run.js';

export default class KubeRbac extends DmctlCommand {
  static override summary = 'Print the minimal Role for what dmctl does in a namespace (--kube commands).';
  static override description = 'Secrets, ConfigMaps, Services and Deployments for `server start|stop --kube`; pods (create, watch, delete) and pods/log for the datamover pods; services/proxy for `server status --kube`; persistentvolumeclaims (get) to name a missing claim; events (list) to tell a pod waiting for a claim attached to another node. Bind it to the user or service account that runs dmctl.';
  static override examples = ['<%= config.bin %> kube rbac --namespace backup | kubectl apply -f -'];
  static override flags = {
    name: Flags.string({ summary: 'Name of the Role.', default: 'dmctl' }),
    namespace: Flags.string({ char: 'n', summary: 'Namespace of the Role.', default: 'default' }),
  };

  async run(): Promise<unknown> {
    const { flags } = await this.parse(KubeRbac);
    if (!this.jsonEnabled()) process.stdout.write(rbacYaml(flags.name, flags.namespace));
    return rbacRole(flags.name, flags.namespace);
  }
}
