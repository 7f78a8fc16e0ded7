import { DmctlCommand, repoFlags } from '../../base-command.js';
import { removeConnection } from '../../config/connection.js';

export default class RepoDisconnect extends DmctlCommand {
  static override summary = 'Forget the saved repository connection (and the password file it wrote).';
  static override description = 'Removes the connection file and the password file `repo connect` wrote next to it. The repository itself is not touched.';
  static override examples = [{ description: 'Forget the default connection:', command: '<%= config.bin %> <%= command.id %>' }, { description: 'Forget another connection file:', command: '<%= config.bin %> <%= command.id %> --config-file ./ci-connection.json' }];
  static override flags = { 'config-file': repoFlags['config-file'] };

  async run(): Promise<{ removed: string[] }> {
    await this.parse(RepoDisconnect);
    const settings = await this.settings();
    const removed = await removeConnection(settings.configFile);
    if (!this.jsonEnabled()) this.log(removed.length ? `removed ${removed.join(', ')}` : 'no connection was saved');
    return { removed };
  }
}
