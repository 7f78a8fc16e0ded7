import { DmctlCommand } from '../base-command.js';

export interface VersionInfo {
  name: string;
  version: string;
  node: string;
  platform: string;
  arch: string;
  /** Repository format version written (restic v2). */
  repositoryFormat: number;
}

export default class Version extends DmctlCommand {
  static override summary = 'Show the dmctl version.';

  static override description = 'Prints the dmctl version, the Node.js it runs on, the platform, and the repository format it writes.';

  static override examples = ['<%= config.bin %> <%= command.id %>', '<%= config.bin %> <%= command.id %> --json'];

  async run(): Promise<VersionInfo> {
    await this.parse(Version);
    const info: VersionInfo = {
      name: this.config.name,
      version: this.config.version,
      node: process.version,
      platform: process.platform,
      arch: process.arch,
      repositoryFormat: 2,
    };
    this.log(`${this.config.bin} ${info.version} (node ${info.node} on ${info.platform}/${info.arch}, repository format v${info.repositoryFormat})`);
    return info;
  }
}
