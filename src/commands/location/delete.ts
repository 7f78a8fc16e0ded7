import { Flags } from '@oclif/core';
import { DmctlCommand } from '../../base-command.js';
import { loadProfile, profileLocation, profileOptions } from '../../kanister/profile.js';
import { openObjectStore } from '../../storage/object-store.js';

export default class LocationDelete extends DmctlCommand {
  static override summary = 'Delete every object whose key starts with the given path (kando prefix delete).';
  static override description = `kando-compatible: removes every key starting with join(Location.prefix, --path) — a string prefix,
so --path backups/db also removes backups/db2. Prints nothing; --json prints {prefix, deleted}.`;
  static override examples = [
    {
      description: 'Delete a dump (and every key that starts with the same string) under the profile prefix:',
      command: `<%= config.bin %> location delete --path backups/db.sql --profile '{{ toJson .Profile }}'`,
    },
  ];
  static override flags = {
    path: Flags.string({ char: 's', summary: 'Key prefix under the profile prefix.', required: true }),
    profile: Flags.string({ char: 'p', summary: 'Kanister Profile JSON ({{ toJson .Profile }}).' }),
    'profile-file': Flags.string({ summary: 'File holding the Profile JSON (keeps secrets out of argv).' }),
  };

  async run(): Promise<{ prefix: string; deleted: number }> {
    const { flags } = await this.parse(LocationDelete);
    const profile = await loadProfile({ profile: flags.profile, profileFile: flags['profile-file'] });
    const store = await openObjectStore(profileLocation(profile), profileOptions(profile));
    try {
      return { prefix: flags.path, deleted: await store.deleteWithPrefix(flags.path) };
    } finally {
      await store.close();
    }
  }
}
