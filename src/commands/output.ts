import { Args } from '@oclif/core';
import { DmctlCommand } from '../base-command.js';
import { phaseOutputLine, validatePhaseOutputKey } from '../kanister/output.js';

export default class Output extends DmctlCommand {
  static override summary = 'Print a Kanister phase output (key and value) on stdout.';

  static override description = `Writes one line that Kanister's output parser collects into the phase's outputs, byte for byte as \`kando output\` writes it:

  ###Phase-output###: {"key":"KEY","value":"VALUE"}

The key must be non-empty and hold only letters, digits and underscore. The value is any string (JSON-escaped as Go does). Under --json, prints {"key":..,"value":..} instead of the phase-output line.`;

  static override examples = [
    {
      description: 'Record a snapshot id for a later phase:',
      command: '<%= config.bin %> <%= command.id %> snapshotID 4f2a9c1e',
    },
    {
      description: 'Inside a Kanister blueprint phase (KubeTask):',
      command: "<%= config.bin %> <%= command.id %> version '{{ .Phases.backup.Output.version }}'",
    },
  ];

  static override args = {
    key: Args.string({ required: true, description: 'Output name: letters, digits and underscore.' }),
    value: Args.string({ required: true, description: 'Output value (any string; use quotes).' }),
  };

  static override strict = true;

  async run(): Promise<{ key: string; value: string }> {
    const { args } = await this.parse(Output);
    validatePhaseOutputKey(args.key);
    if (!this.jsonEnabled()) process.stdout.write(phaseOutputLine(args.key, args.value));
    return { key: args.key, value: args.value };
  }
}
