import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { dirname, resolve } from 'node:path';
import { Args, Config, Errors, Flags, Parser } from '@oclif/core';
import { DmctlCommand, describeError, globalFlags, oneLine, repoFlags } from '../../src/base-command.js';
import { EXIT_CODES, LockedError, UsageError, WrongPasswordError } from '../../src/core/errors.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

test('DmctlError maps to its code, one-line message, hint and exit code', () => {
  assert.deepEqual(describeError(new WrongPasswordError()), {
    code: 'wrong-password',
    message: 'wrong password: no key in the repository opens with it',
    hint: 'check --password-file, DM_PASSWORD_FILE, DM_PASSWORD or RESTIC_PASSWORD',
    exitCode: 12,
  });
  const locked = describeError(new LockedError('repository is locked by pid 42 on host\nsecond line'));
  assert.equal(locked.exitCode, EXIT_CODES.LOCKED);
  assert.equal(locked.message, 'repository is locked by pid 42 on host second line');
  assert.deepEqual(describeError(new UsageError('bad')), { code: 'usage', message: 'bad', exitCode: 2 });
});

test('oclif parse errors become one usage line with exit code 2', async () => {
  const err = await Parser.parse(['--bogus'], { flags: { real: Flags.string() }, args: {}, strict: true }).catch((e: unknown) => e);
  assert.ok(err instanceof Errors.CLIError);
  const rep = describeError(err, 'repo:init');
  assert.equal(rep.exitCode, 2);
  assert.equal(rep.code, 'usage');
  assert.ok(!rep.message.includes('\n'));
  assert.match(rep.message, /--bogus/);
  assert.match(rep.message, /dmctl repo init --help/);

  const missing = await Parser.parse([], { flags: {}, args: { key: Args.string({ required: true, description: 'the key' }) }, strict: true }).catch(
    (e: unknown) => e,
  );
  const rep2 = describeError(missing, 'output');
  assert.equal(rep2.exitCode, 2);
  assert.match(rep2.message, /^missing required argument: KEY/);
});

test('anything else is an internal error with exit 1, a hint to use -v debug, and the stack kept for debug', () => {
  const rep = describeError(new TypeError('x is undefined'));
  assert.equal(rep.exitCode, 1);
  assert.equal(rep.code, 'internal');
  assert.equal(rep.message, 'internal error: x is undefined');
  assert.match(rep.hint!, /-v debug/);
  assert.match(rep.stack!, /TypeError/);
  assert.equal(describeError('a string').message, 'internal error: a string');
  assert.equal(describeError(Object.assign(new Error('cancel'), { name: 'ExitPromptError' })).exitCode, 130);
});

test('oneLine collapses lines and hides control characters', () => {
  assert.equal(oneLine('  a\n  b\r\n\nc\u001b[31m '), 'a b c?[31m');
});

test('shared flags: names and short options', () => {
  assert.equal(repoFlags.repo.char, 'r');
  for (const f of ['repo', 'password-file', 'config-file', 'cacert', 'insecure-tls', 'connections', 'profile', 'profile-file', 'server-cert-fingerprint', 'retry-lock']) {
    assert.ok(f in repoFlags, f);
  }
  assert.equal(globalFlags['log-level'].char, 'v');
  assert.deepEqual(globalFlags['log-level'].options, ['error', 'warn', 'info', 'debug']);
  assert.equal(DmctlCommand.enableJsonFlag, true);
});

/** Runs `fn` with stdout/stderr writes captured. */
async function capture<T>(fn: () => Promise<T>): Promise<{ out: string; err: string; result?: T; error?: unknown }> {
  const ow = process.stdout.write.bind(process.stdout);
  const ew = process.stderr.write.bind(process.stderr);
  let out = '';
  let err = '';
  process.stdout.write = ((c: string | Uint8Array) => ((out += c.toString()), true)) as typeof process.stdout.write;
  process.stderr.write = ((c: string | Uint8Array) => ((err += c.toString()), true)) as typeof process.stderr.write;
  try {
    const result = await fn();
    return { out, err, result };
  } catch (error) {
    return { out, err, error };
  } finally {
    process.stdout.write = ow;
    process.stderr.write = ew;
  }
}

class Failing extends DmctlCommand {
  static override flags = { ...repoFlags };
  async run(): Promise<void> {
    const { flags } = await this.parse(Failing);
    const s = await this.settings();
    if (flags.repo === 'internal') throw new TypeError('boom');
    await s.password();
  }
}

class Settings extends DmctlCommand {
  static override flags = { ...repoFlags };
  async run(): Promise<{ repository?: string; source?: string; level: string }> {
    await this.parse(Settings);
    const s = await this.settings();
    return { repository: s.repository, source: s.repositorySource, level: s.logLevel };
  }
}

class Slow extends DmctlCommand {
  static cleaned = false;
  async run(): Promise<void> {
    await this.parse(Slow);
    this.onInterrupt(async () => {
      await new Promise((r) => setTimeout(r, 20));
      Slow.cleaned = true;
    });
    await new Promise((_, reject) => this.abortSignal.addEventListener('abort', () => reject(this.abortSignal.reason)));
  }
}

const exitCodeOf = (e: unknown) => (e as { oclif?: { exit?: number } })?.oclif?.exit;

test('in a command: DmctlError ⇒ "dmctl: message" + "hint:" on stderr and the exit code', async () => {
  const config = await Config.load({ root });
  const env = { ...process.env };
  process.env.XDG_CONFIG_HOME = '/nonexistent-dmctl-test';
  for (const k of ['DM_PASSWORD', 'DM_PASSWORD_FILE', 'RESTIC_PASSWORD', 'RESTIC_PASSWORD_FILE', 'RESTIC_PASSWORD_COMMAND', 'NO_COLOR']) delete process.env[k];
  process.env.NO_COLOR = '1';
  try {
    const r = await capture(() => Failing.run(['-r', '/tmp/x'], config));
    assert.equal(exitCodeOf(r.error), 2);
    assert.equal(r.out, '');
    assert.equal(r.err.split('\n')[0], 'dmctl: no password given');
    assert.match(r.err.split('\n')[1]!, /^hint: give the password with --password-file/);

    const j = await capture(() => Failing.run(['-r', '/tmp/x', '--json'], config));
    assert.equal(exitCodeOf(j.error), 2);
    assert.equal(j.err, '');
    const obj = JSON.parse(j.out);
    assert.deepEqual(Object.keys(obj), ['error', 'message', 'hint', 'exitCode']);
    assert.equal(obj.error, 'usage');
    assert.equal(obj.exitCode, 2);

    const i = await capture(() => Failing.run(['-r', 'internal'], config));
    assert.equal(exitCodeOf(i.error), 1);
    assert.match(i.err, /^dmctl: internal error: boom\nhint: .*-v debug/);
    assert.doesNotMatch(i.err, /at .*base-command/, 'no stack without -v debug');
    const d = await capture(() => Failing.run(['-r', 'internal', '-v', 'debug'], config));
    assert.match(d.err, /TypeError: boom\n\s+at /);

    process.env.DM_REPOSITORY = 's3:from-env/bucket';
    const s = await capture(() => Settings.run(['--json', '-v', 'info'], config));
    assert.equal(s.error, undefined);
    assert.deepEqual(JSON.parse(s.out), { repository: 's3:from-env/bucket', source: 'DM_REPOSITORY', level: 'info' });
  } finally {
    for (const k of Object.keys(process.env)) if (!(k in env)) delete process.env[k];
    Object.assign(process.env, env);
  }
});

test('SIGINT: interrupt handlers run, then "interrupted" and exit 130', async () => {
  const config = await Config.load({ root });
  const realExit = process.exit;
  let exitCode: number | undefined;
  process.exit = ((code?: number) => {
    exitCode = code;
  }) as typeof process.exit;
  try {
    const r = await capture(async () => {
      const p = Slow.run([], config);
      await new Promise((res) => setTimeout(res, 50));
      process.emit('SIGINT', 'SIGINT');
      return p;
    });
    assert.equal(Slow.cleaned, true);
    assert.equal(exitCode, 130);
    assert.match(r.err, /dmctl: interrupted by SIGINT/);
    assert.equal(process.listenerCount('SIGINT'), 0, 'listeners removed after the command');
  } finally {
    process.exit = realExit;
  }
});
