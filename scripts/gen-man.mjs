#!/usr/bin/env node
// Generates roff man pages from the compiled oclif command tree:
//   man/man1/dmctl.1                 overview, global options, exit status, environment
//   man/man1/dmctl-<topic>-<cmd>.1   one page per command (NAME, SYNOPSIS, DESCRIPTION, OPTIONS,
//                                    EXAMPLES, EXIT STATUS, ENVIRONMENT, SEE ALSO)
// Usage: npx tsc -p . && node scripts/gen-man.mjs [--out DIR]     (DIR defaults to ./man)
// Then:  MANPATH=man man dmctl-backup
// The page date comes from SOURCE_DATE_EPOCH when set (reproducible builds), otherwise it is left out.

import { readFile, mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Config } from '@oclif/core';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');

function parseArgs(argv) {
  let out = join(root, 'man');
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--out' && argv[i + 1]) out = resolve(argv[++i]);
    else if (argv[i].startsWith('--out=')) out = resolve(argv[i].slice(6));
    else if (argv[i] === '-h' || argv[i] === '--help') {
      process.stdout.write('usage: node scripts/gen-man.mjs [--out DIR]   (after `npx tsc -p .`)\n');
      process.exit(0);
    } else {
      process.stderr.write(`gen-man: unknown argument ${argv[i]}\n`);
      process.exit(2);
    }
  }
  return { out };
}

// ---------------------------------------------------------------------------------------------
// roff helpers

/** Escape text for roff: backslashes, hyphens (so they stay ASCII minus), leading dots/quotes. */
function esc(s) {
  return String(s ?? '')
    .replace(/\\/g, '\\e')
    .replace(/-/g, '\\-')
    .replace(/^([.'])/gm, '\\&$1')
    // Non-ASCII as groff Unicode escapes, so the pages render without preconv too.
    .replace(/[^\x00-\x7f]/gu, (ch) => `\\[u${ch.codePointAt(0).toString(16).toUpperCase().padStart(4, '0')}]`);
}

/** Inline markup: `code` → bold. Input is raw text; output is escaped roff. */
function inline(s) {
  return String(s ?? '')
    .split(/(`[^`\n]+`)/)
    .map((part) => (part.startsWith('`') && part.endsWith('`') && part.length > 2 ? `\\fB${esc(part.slice(1, -1))}\\fR` : esc(part)))
    .join('');
}

/** Paragraphs separated by blank lines; indented paragraphs become literal blocks. */
function prose(text) {
  const out = [];
  const paras = String(text ?? '').replace(/\r\n/g, '\n').split(/\n\s*\n/);
  for (const p of paras) {
    if (!p.trim()) continue;
    const lines = p.split('\n');
    if (lines.every((l) => /^\s/.test(l) || l === '')) {
      const indent = Math.min(...lines.filter((l) => l.trim()).map((l) => l.match(/^\s*/)[0].length));
      out.push('.PP', '.RS 4', '.nf', ...lines.map((l) => esc(l.slice(indent))), '.fi', '.RE');
    } else {
      out.push('.PP', ...lines.map((l) => inline(l.trim())));
    }
  }
  return out;
}

function renderTemplate(s, cmdId) {
  return String(s)
    .replace(/<%=\s*config\.bin\s*%>/g, 'dmctl')
    .replace(/<%=\s*command\.id\s*%>/g, cmdId.replace(/:/g, ' '));
}

// ---------------------------------------------------------------------------------------------
// Data the pages share

/** Exit codes with the one-line descriptions from the doc comments in src/core/errors.ts. */
async function exitCodeTable() {
  const { EXIT_CODES } = await import(pathToFileURL(join(root, 'dist/src/core/errors.js')).href);
  const descriptions = {};
  const srcPath = join(root, 'src/core/errors.ts');
  if (existsSync(srcPath)) {
    const src = await readFile(srcPath, 'utf8');
    const start = src.indexOf('EXIT_CODES = {');
    const block = start >= 0 ? src.slice(start, src.indexOf('} as const', start)) : '';
    const re = /\/\*\*((?:(?!\*\/)[\s\S])*)\*\/\s*([A-Z_]+)\s*:/g;
    let m;
    while ((m = re.exec(block)) !== null) descriptions[m[2]] = m[1].replace(/\s*\n\s*\*\s*/g, ' ').trim();
    descriptions.OK ??= 'Success.';
  }
  return Object.entries(EXIT_CODES)
    .map(([name, code]) => ({ code, name, description: descriptions[name] ?? name.toLowerCase().replace(/_/g, ' ') }))
    .sort((a, b) => a.code - b.code);
}

async function settingsDocs() {
  const mod = await import(pathToFileURL(join(root, 'dist/src/config/settings.js')).href);
  return { environment: mod.ENVIRONMENT, resolution: mod.SETTINGS_RESOLUTION };
}

function exitStatusSection(codes) {
  const out = ['.SH "EXIT STATUS"'];
  for (const c of codes) out.push('.TP', `.B ${c.code}`, `${inline(c.description)} (${esc(c.name)})`);
  return out;
}

function environmentSection(env) {
  const out = ['.SH ENVIRONMENT'];
  for (const e of env) out.push('.TP', `.B ${esc(e.name)}`, inline(e.description));
  return out;
}

function resolutionSection(resolution) {
  const out = ['.SH "REPOSITORY AND PASSWORD"', '.PP', 'The repository is the first of:'];
  resolution.repository.forEach((r, i) => out.push('.IP', `${i + 1}.`.padEnd(3), `\\fB${esc(r.source)}\\fR: ${inline(r.description)}`));
  out.push('.PP', 'The password is the first of:');
  resolution.password.forEach((r, i) => out.push('.IP', `${i + 1}.`.padEnd(3), `\\fB${esc(r.source)}\\fR: ${inline(r.description)}`));
  out.push('.PP', inline(`Password files: ${resolution.passwordFileRules}.`));
  out.push('.PP', inline('The connection file options and password apply only when its repository is the one in use.'));
  return out;
}

// ---------------------------------------------------------------------------------------------
// Commands

function pageName(id) {
  return `dmctl-${id.replace(/[: ]/g, '-')}`;
}

function flagTerm(f) {
  const names = [];
  if (f.char) names.push(`\\fB\\-${esc(f.char)}\\fR`);
  names.push(`\\fB\\-\\-${esc(f.name)}\\fR`);
  let term = names.join(', ');
  if (f.type === 'option') {
    const value = f.helpValue ?? (f.options?.length ? f.options.join('|') : f.name.toUpperCase());
    term += `=\\fI${esc(Array.isArray(value) ? value.join(' ') : value)}\\fR`;
  }
  return term;
}

function flagText(f) {
  const parts = [];
  if (f.summary) parts.push(f.summary);
  if (f.description && f.description !== f.summary) parts.push(f.description);
  if (f.options?.length && !f.helpValue) parts.push(`One of: ${f.options.join(', ')}.`);
  if (f.default !== undefined && typeof f.default !== 'function' && f.default !== false) parts.push(`Default: ${JSON.stringify(f.default)}.`);
  if (f.multiple) parts.push('May be given more than once.');
  if (f.aliases?.length) parts.push(`Alias: ${f.aliases.map((a) => (a.length === 1 ? `-${a}` : `--${a}`)).join(', ')}.`);
  if (f.env) parts.push(`Environment: ${f.env}.`);
  return parts.map((p) => inline(p.replace(/\s*\n\s*/g, ' '))).join(' ');
}

function synopsis(cmd) {
  const words = cmd.id.split(':').map(esc).join(' ');
  const args = Object.values(cmd.args ?? {})
    .filter((a) => !a.hidden)
    .map((a) => {
      const name = `\\fI${esc(a.name.toUpperCase())}\\fR`;
      return a.required ? name : `[${name}]`;
    });
  const varargs = cmd.strict === false ? ' ...' : '';
  return ['.SH SYNOPSIS', `.B dmctl ${words}`, `[\\fIOPTIONS\\fR]${args.length ? ' ' + args.join(' ') : ''}${varargs}`];
}

function examplesSection(cmd) {
  const ex = cmd.examples ?? [];
  if (!ex.length) return [];
  const out = ['.SH EXAMPLES'];
  for (const e of ex) {
    const obj = typeof e === 'string' ? { command: e } : e;
    if (obj.description) out.push('.PP', inline(renderTemplate(obj.description, cmd.id)));
    const lines = renderTemplate(obj.command, cmd.id).split('\n');
    out.push('.PP', '.RS 4', '.nf', ...lines.map((l) => esc(l.startsWith('$ ') || l.startsWith('dmctl') ? l : l)), '.fi', '.RE');
  }
  return out;
}

function argumentsSection(cmd) {
  const args = Object.values(cmd.args ?? {}).filter((a) => !a.hidden);
  if (!args.length) return [];
  const out = ['.SH ARGUMENTS'];
  for (const a of args) {
    out.push('.TP', `\\fI${esc(a.name.toUpperCase())}\\fR`, inline(a.description ?? '') + (a.options?.length ? ` One of: ${esc(a.options.join(', '))}.` : ''));
  }
  return out;
}

function optionsSection(cmd) {
  const flags = Object.values(cmd.flags ?? {}).filter((f) => !f.hidden);
  if (!flags.length) return [];
  // Command's own flags first, then grouped ones (REPOSITORY, GLOBAL), each alphabetically.
  const group = (f) => f.helpGroup ?? '';
  const order = (g) => (g === '' ? 0 : g === 'GLOBAL' ? 2 : 1);
  flags.sort((a, b) => order(group(a)) - order(group(b)) || group(a).localeCompare(group(b)) || a.name.localeCompare(b.name));
  const out = ['.SH OPTIONS'];
  let current;
  for (const f of flags) {
    const g = f.name === 'json' ? 'GLOBAL' : group(f);
    if (g !== current && g !== '') out.push(`.SS "${g.charAt(0) + g.slice(1).toLowerCase()} options"`);
    current = g;
    out.push('.TP', flagTerm(f), flagText(f) || (f.name === 'json' ? 'Print the result as JSON on stdout.' : ''));
  }
  return out;
}

function header(name, version, date) {
  return [
    `.\\" Generated by scripts/gen-man.mjs from the dmctl command definitions. Do not edit.`,
    `.TH ${esc(name.toUpperCase())} 1 "${date}" "dmctl ${esc(version)}" "dmctl manual"`,
  ];
}

function commandPage(cmd, ctx) {
  const name = pageName(cmd.id);
  const summary = cmd.summary ?? (cmd.description ?? '').split('\n')[0] ?? '';
  const body = cmd.summary && cmd.description ? cmd.description : cmd.description ?? cmd.summary ?? '';
  return [
    ...header(name, ctx.version, ctx.date),
    '.SH NAME',
    `${esc(name)} \\- ${inline(summary.replace(/\.$/, ''))}`,
    ...synopsis(cmd),
    '.SH DESCRIPTION',
    ...prose(body),
    ...argumentsSection(cmd),
    ...optionsSection(cmd),
    ...examplesSection(cmd),
    ...exitStatusSection(ctx.codes),
    ...environmentSection(ctx.env),
    '.SH "SEE ALSO"',
    '.BR dmctl (1)',
    '',
  ].join('\n');
}

function mainPage(cmds, ctx, config) {
  const out = [
    ...header('dmctl', ctx.version, ctx.date),
    '.SH NAME',
    `dmctl \\- ${inline(config.pjson.description ?? 'backup tool')}`,
    '.SH SYNOPSIS',
    '.B dmctl',
    '\\fICOMMAND\\fR [\\fIOPTIONS\\fR] [\\fIARGUMENTS\\fR]',
    '.SH DESCRIPTION',
    ...prose(
      'dmctl writes encrypted, deduplicated backups of directories and streams in the restic repository format (version 2), ' +
        'so restic can read what dmctl writes and the other way round. Results go to stdout (a table, or JSON with `--json`); ' +
        'progress, warnings and errors go to stderr. Options may also come before the command, as restic users write them: ' +
        '`dmctl -r /srv/repo snapshots`.\n\nEach command has its own page, e.g. `man dmctl-backup`, and `dmctl COMMAND --help`.',
    ),
    '.SH COMMANDS',
  ];
  for (const c of cmds) out.push('.TP', `.BR ${pageName(c.id)} (1)`, `\\fBdmctl ${esc(c.id.replace(/:/g, ' '))}\\fR: ${inline(c.summary ?? '')}`);
  const sample = cmds.find((c) => c.flags?.repo) ?? cmds[0];
  if (sample) {
    const globals = Object.values(sample.flags ?? {}).filter((f) => !f.hidden && (f.helpGroup === 'GLOBAL' || f.helpGroup === 'REPOSITORY' || f.name === 'json'));
    globals.sort((a, b) => a.name.localeCompare(b.name));
    out.push('.SH "COMMON OPTIONS"', '.PP', 'Commands that open a repository take the repository options; every command takes the global ones.');
    for (const f of globals) out.push('.TP', flagTerm(f), flagText(f) || 'Print the result as JSON on stdout.');
  }
  out.push(...resolutionSection(ctx.resolution), ...exitStatusSection(ctx.codes), ...environmentSection(ctx.env));
  out.push('.SH FILES', '.TP', '.I ~/.config/dmctl/connection.json', 'Connection written by \\fBdmctl repo connect\\fR (mode 0600), with the password in \\fIconnection.password\\fR next to it.');
  out.push('.SH "SEE ALSO"', cmds.map((c) => `.BR ${pageName(c.id)} (1)`).join(',\n') || 'restic(1)', '.BR restic (1)', '');
  return out.join('\n');
}

async function main() {
  const { out } = parseArgs(process.argv.slice(2));
  if (!existsSync(join(root, 'dist/src/commands'))) {
    process.stderr.write('gen-man: dist/src/commands is missing; run `npx tsc -p .` first\n');
    process.exit(1);
  }
  const config = await Config.load({ root });
  const cmds = config.commands
    .filter((c) => !c.hidden && c.pluginName === config.name)
    .sort((a, b) => a.id.localeCompare(b.id));
  const epoch = process.env.SOURCE_DATE_EPOCH;
  const ctx = {
    version: config.version,
    date: epoch && /^\d+$/.test(epoch) ? new Date(Number(epoch) * 1000).toISOString().slice(0, 10) : '',
    codes: await exitCodeTable(),
    ...(await settingsDocs().then((d) => ({ env: d.environment, resolution: d.resolution }))),
  };
  const dir = join(out, 'man1');
  await mkdir(dir, { recursive: true });
  for (const f of await readdir(dir)) if (/^dmctl(-.*)?\.1$/.test(f)) await rm(join(dir, f));
  const written = [];
  await writeFile(join(dir, 'dmctl.1'), mainPage(cmds, ctx, config));
  written.push('dmctl.1');
  for (const cmd of cmds) {
    const file = `${pageName(cmd.id)}.1`;
    await writeFile(join(dir, file), commandPage(cmd, ctx));
    written.push(file);
  }
  process.stdout.write(`gen-man: wrote ${written.length} pages to ${dir}\n`);
}

main().catch((err) => {
  process.stderr.write(`gen-man: ${err?.stack ?? err}\n`);
  process.exit(1);
});
