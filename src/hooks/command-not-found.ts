// oclif's command_not_found hook. Flags before the command (restic's `-r REPO snapshots`) are moved behind it;
// an unknown command (or datamover mode) is one line, a hint and exit code 2, in the same shape as every other
// usage error (one JSON object with --json), instead of oclif's default banner.
import type { Hook } from '@oclif/core';
import { UsageError } from '../core/errors.js';
import { describeError, writeErrorReport } from '../base-command.js';

/** Levenshtein distance, for a "did you mean" on typos. */
function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length]!;
}

/**
 * restic users type the repository first: `dmctl -r /srv/repo snapshots`. oclif wants the command first, so find
 * the first run of words after the leading flags that names a command and move it to the front.
 */
function commandAfterFlags(tokens: string[], ids: Set<string>): { id: string; argv: string[] } | undefined {
  for (let i = 1; i < tokens.length; i++) {
    if (tokens[i] === '--') return undefined;
    for (let n = Math.min(3, tokens.length - i); n > 0; n--) {
      const id = tokens.slice(i, i + n).join(':');
      if (ids.has(id)) return { id, argv: [...tokens.slice(0, i), ...tokens.slice(i + n)] };
    }
  }
  return undefined;
}

const hook: Hook<'command_not_found'> = async function (opts) {
  if (opts.id.startsWith('-')) {
    const found = commandAfterFlags([opts.id, ...(opts.argv ?? [])], new Set(opts.config.commandIDs));
    if (found) return opts.config.runCommand(found.id, found.argv);
  }
  const json = [opts.id, ...(opts.argv ?? [])].includes('--json');
  const fail = (message: string, hint: string) => {
    const rep = describeError(new UsageError(message, hint));
    writeErrorReport(rep, json);
    process.exitCode = rep.exitCode;
    return undefined;
  };
  if (opts.id.startsWith('-')) return fail('no known command among the arguments', `name one before or after the flags, e.g. \`${opts.config.bin} snapshots -r REPO\`; see \`${opts.config.bin} --help\``);
  // With a space as topic separator oclif joins the leading words into the id: "datamover:foo:/data".
  const words = opts.id.split(':');
  const known = opts.config.commandIDs.map((id) => id.replaceAll(':', ' '));
  let message: string;
  let hint: string;
  if (words[0] === 'datamover' && words.length > 1) {
    message = `unknown datamover mode "${words[1]}"`;
    hint = `the datamover contract's modes are ${known.filter((k) => k.startsWith('datamover ')).map((k) => k.slice(10)).join(', ')}`;
  } else {
    // The longest prefix of the words that names a topic or command tells what was meant.
    let typed = words[0]!;
    for (let n = words.length; n > 0; n--) {
      const p = words.slice(0, n).join(' ');
      if (known.some((k) => k.startsWith(`${p} `))) {
        typed = words.slice(0, n + 1).join(' ');
        break;
      }
    }
    message = `unknown command "${typed}"`;
    const close = known.filter((k) => k.split(' ').length === typed.split(' ').length).map((k) => ({ k, d: distance(k, typed) })).filter((x) => x.d <= 2).sort((x, y) => x.d - y.d)[0];
    hint = close ? `did you mean \`${opts.config.bin} ${close.k}\`? See \`${opts.config.bin} --help\`` : `see \`${opts.config.bin} --help\` for the commands`;
  }
  return fail(message, hint);
};

export default hook;
