import { createReadStream, promises as fsp } from 'node:fs';
import { Args, Flags } from '@oclif/core';
import { DmctlCommand } from '../../base-command.js';
import { UsageError } from '../../core/errors.js';
import { loadProfile, profileLocation, profileOptions } from '../../kanister/profile.js';
import { openObjectStore } from '../../storage/object-store.js';

export default class LocationPush extends DmctlCommand {
  static override summary = 'Stream a file or stdin to the object store a Kanister profile points at.';
  static override description = `kando-compatible: the object key is join(Location.prefix, --path) in Location.bucket of the profile.
The upload streams with bounded memory (8 MiB parts), so a stream of any size can be pushed; the object
appears only once it is complete. Prints nothing (like kando for object stores); --json prints {key, bytes}.`;
  static override examples = [
    {
      description: 'Stream a database dump to the object store (bounded memory, whatever its size):',
      command: `pg_dump db | <%= config.bin %> location push - --path backups/db.sql --profile '{{ toJson .Profile }}'`,
    },
    {
      description: 'Upload a file, with the profile in a file (keeps credentials out of the process list):',
      command: '<%= config.bin %> location push ./dump.tar --path backups/dump.tar --profile-file /etc/kanister/profile.json',
    },
  ];
  static override args = {
    source: Args.string({ required: true, description: 'file to upload, or - for stdin' }),
  };
  static override flags = {
    path: Flags.string({ char: 's', summary: 'Object path under the profile prefix.', required: true }),
    profile: Flags.string({ char: 'p', summary: 'Kanister Profile JSON ({{ toJson .Profile }}).' }),
    'profile-file': Flags.string({ summary: 'File holding the Profile JSON (keeps secrets out of argv).' }),
    'output-name': Flags.string({ char: 'o', summary: 'Phase output key (kando compatibility; unused for object stores).', default: 'kandoOutput' }),
  };

  async run(): Promise<{ key: string; bytes: number }> {
    const { args, flags } = await this.parse(LocationPush);
    const profile = await loadProfile({ profile: flags.profile, profileFile: flags['profile-file'] });
    let source: NodeJS.ReadableStream;
    if (args.source === '-') {
      if (process.stdin.isTTY) throw new UsageError('stdin must be piped when the source is "-"');
      source = process.stdin;
    } else {
      const st = await fsp.stat(args.source).catch(() => undefined);
      if (!st?.isFile()) throw new UsageError(`cannot read ${args.source}: not a readable file`);
      source = createReadStream(args.source);
    }
    const store = await openObjectStore(profileLocation(profile), profileOptions(profile));
    try {
      return await store.putStream(flags.path, source as any);
    } finally {
      await store.close();
    }
  }
}
