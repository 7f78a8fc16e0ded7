import { promises as fsp, createWriteStream } from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { pipeline } from 'node:stream/promises';
import { Transform } from 'node:stream';
import { Args, Flags } from '@oclif/core';
import { DmctlCommand } from '../../base-command.js';
import { StorageError, TargetError, describeSystemError } from '../../core/errors.js';
import { loadProfile, profileLocation, profileOptions } from '../../kanister/profile.js';
import { openObjectStore } from '../../storage/object-store.js';

export default class LocationPull extends DmctlCommand {
  static override summary = 'Stream an object from the store a Kanister profile points at to a file or stdout.';
  static override description = `kando-compatible: reads join(Location.prefix, --path) from Location.bucket. A file target is written
under a temporary name and renamed when complete (kando writes in place without truncating; dmctl never
leaves a mix of old and new bytes). Prints nothing but the data for "-".`;
  static override examples = [
    {
      description: 'Restore a dump into psql straight from the object store:',
      command: `<%= config.bin %> location pull - --path backups/db.sql --profile '{{ toJson .Profile }}' | psql db`,
    },
    {
      description: 'Download to a file, with the profile in a file (keeps credentials out of the process list):',
      command: '<%= config.bin %> location pull ./dump.tar --path backups/dump.tar --profile-file /etc/kanister/profile.json',
    },
  ];
  static override args = {
    target: Args.string({ required: true, description: 'file to write, or - for stdout' }),
  };
  static override flags = {
    path: Flags.string({ char: 's', summary: 'Object path under the profile prefix.', required: true }),
    profile: Flags.string({ char: 'p', summary: 'Kanister Profile JSON ({{ toJson .Profile }}).' }),
    'profile-file': Flags.string({ summary: 'File holding the Profile JSON (keeps secrets out of argv).' }),
  };

  async run(): Promise<{ key: string; bytes: number } | void> {
    const { args, flags } = await this.parse(LocationPull);
    const profile = await loadProfile({ profile: flags.profile, profileFile: flags['profile-file'] });
    const store = await openObjectStore(profileLocation(profile), profileOptions(profile));
    try {
      const src = await store.getStream(flags.path);
      let bytes = 0;
      const count = new Transform({ transform(chunk: Buffer, _e, cb) { bytes += chunk.length; cb(null, chunk); } });
      if (args.target === '-') {
        await pipeline(src, count, process.stdout, { end: false }).catch((err) => {
          if (err instanceof StorageError) throw err;
          throw new StorageError('unreachable', `${store.location}: downloading ${flags.path}: ${describeSystemError(err)}`, { cause: err });
        });
        return;
      }
      const final = path.resolve(args.target);
      const tmp = `${final}.dmctl-tmp-${crypto.randomBytes(4).toString('hex')}`;
      try {
        await pipeline(src, count, createWriteStream(tmp, { mode: 0o644 }));
        await fsp.rename(tmp, final);
      } catch (err) {
        await fsp.unlink(tmp).catch(() => {});
        if ((err as NodeJS.ErrnoException).syscall) throw new TargetError(`writing ${final}: ${describeSystemError(err)}`, { cause: err });
        throw err;
      }
      return { key: flags.path, bytes };
    } finally {
      await store.close();
    }
  }
}
