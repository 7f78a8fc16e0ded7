// A Kanister Profile Secret with an AWS `role`: dmctl assumes the role through STS AssumeRole with
// the key pair (60 minutes) and uses the temporary credentials. Against Ceph radosgw 16 with STS
// turned on (rgw sts key, rgw s3 auth use sts) and roles made with radosgw-admin:
// - a role allowed s3:* gives a full repository round trip (init, backup-stream, restore-stream);
// - a read-only role (plus its lock files), with the same key pair, lists and restores but cannot
//   back up: what is allowed follows the role, so the role really is in use;
// - an unknown role is one line naming the role, exit 4, no secret echoed;
// - the credentials the S3 client gets are temporary (session token) and last 60 minutes.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { promises as fsp } from 'node:fs';
import { startRadosgw, RadosgwServer } from '../support/servers.js';
import { dmctl, toolEnv, ToolEnv, RunResult, json } from '../support/run.js';
import { makeS3Client, ASSUME_ROLE_SECONDS } from '../../src/storage/s3.js';
import { parseProfile, profileLocation } from '../../src/kanister/profile.js';

const exec = promisify(execFile);
const tmpRoot = await fsp.mkdtemp(path.join(os.tmpdir(), 'dmctl-cloudsts-'));
const PASSWORD = 'cloud-sts-pw';
let rgw: RadosgwServer;

async function admin(...args: string[]): Promise<string> {
  const { stdout } = await exec('radosgw-admin', ['-c', path.join(rgw.dir, 'c', 'ceph.conf'), ...args], { timeout: 60_000 });
  return stdout;
}

async function makeRole(name: string, statements: { Action: string[]; Resource: string[] }[]): Promise<void> {
  const trust = { Version: '2012-10-17', Statement: [{ Effect: 'Allow', Principal: { AWS: ['arn:aws:iam:::user/test'] }, Action: ['sts:AssumeRole'] }] };
  const perms = { Version: '2012-10-17', Statement: statements.map((st) => ({ Effect: 'Allow', ...st })) };
  await admin('role', 'create', `--role-name=${name}`, '--path=/', `--assume-role-policy-doc=${JSON.stringify(trust)}`);
  await admin('role-policy', 'put', `--role-name=${name}`, '--policy-name=dmctl', `--policy-doc=${JSON.stringify(perms)}`);
}

before(async () => {
  rgw = await startRadosgw({ rgwConfig: { 'rgw sts key': 'dmctl-sts-key-16', 'rgw s3 auth use sts': 'true' } });
  await admin('caps', 'add', '--uid=test', '--caps=roles=*');
  await makeRole('dmctl-full', [{ Action: ['s3:*'], Resource: ['arn:aws:s3:::*'] }]);
  // Reads everything, writes only lock files (restore takes a lock, as restic's does).
  await makeRole('dmctl-readonly', [
    { Action: ['s3:GetObject', 's3:ListBucket', 's3:GetBucketLocation'], Resource: ['arn:aws:s3:::*'] },
    { Action: ['s3:PutObject', 's3:DeleteObject'], Resource: ['arn:aws:s3:::stsbucket/repo/locks/*'] },
  ]);
}, { timeout: 300_000 });

after(async () => {
  await rgw?.stop();
  await fsp.rm(tmpRoot, { recursive: true, force: true });
});

const b64 = (s: string) => Buffer.from(s).toString('base64');
const profile = (role: string) => JSON.stringify({
  Location: { type: 's3Compliant', bucket: 'stsbucket', endpoint: rgw.endpoint, prefix: 'repo', region: 'us-east-1' },
  Credential: {
    Type: 'secret',
    Secret: { type: 'secrets.kanister.io/aws', data: { aws_access_key_id: b64(rgw.accessKeyId), aws_secret_access_key: b64(rgw.secretAccessKey), role: b64(role) } },
  },
});
// No key or role from the developer's shell may stand in for the profile's.
const CLEAN_ENV = { DM_REPOSITORY: undefined, AWS_ACCESS_KEY_ID: undefined, AWS_SECRET_ACCESS_KEY: undefined, AWS_SESSION_TOKEN: undefined, AWS_PROFILE: undefined, AWS_ROLE_ARN: undefined, AWS_WEB_IDENTITY_TOKEN_FILE: undefined };
const show = (r: RunResult) => `${r.command.replace(/--profile \S+/, '--profile …')} → ${r.code}\n${r.stderr.slice(-3000)}`;
const sha = (b: Buffer) => crypto.createHash('sha256').update(b).digest('hex');

describe('Kanister Profile with an AWS role (STS AssumeRole on radosgw)', () => {
  let tool: ToolEnv;
  const run = (args: string[], role: string, input?: Buffer) =>
    dmctl(tool, [...args, '--profile', profile(role)], { env: CLEAN_ENV, input, timeoutMs: 90_000 });
  const stream = crypto.randomBytes(2 * 1024 * 1024 + 99);

  before(() => {
    tool = toolEnv('', PASSWORD, path.join(tmpRoot, 'home'));
  });

  it('the S3 client gets temporary credentials for 60 minutes, not the key pair', async () => {
    const p = parseProfile(profile('arn:aws:iam:::role/dmctl-full'));
    const loc = profileLocation(p);
    assert.equal(loc.scheme, 's3');
    const client = makeS3Client({ location: loc as Extract<typeof loc, { scheme: 's3' }>, credentials: p.credentials.s3 });
    try {
      const asked = Date.now();
      const id = await client.config.credentials();
      assert.notEqual(id.accessKeyId, rgw.accessKeyId);
      assert.ok(id.sessionToken && id.sessionToken.length > 20, 'a session token');
      assert.ok(id.expiration instanceof Date, 'an expiration');
      const lifetime = (id.expiration!.getTime() - asked) / 1000;
      assert.ok(Math.abs(lifetime - ASSUME_ROLE_SECONDS) < 120, `lifetime ${lifetime} s`);
      assert.equal(ASSUME_ROLE_SECONDS, 3600);
    } finally {
      client.destroy();
    }
  });

  it('a role allowed s3:*: repo init, backup-stream and restore-stream work', async () => {
    const role = 'arn:aws:iam:::role/dmctl-full';
    const init = await run(['repo', 'init'], role);
    assert.equal(init.code, 0, show(init));
    const b = await run(['backup-stream', '-q', '--name', 'db.dump'], role, stream);
    assert.equal(b.code, 0, show(b));
    const r = await run(['restore-stream', 'latest'], role);
    assert.equal(r.code, 0, show(r));
    assert.equal(sha(r.stdout), sha(stream));
  });

  it('a read-only role with the same keys lists and restores, but a backup is denied', async () => {
    const role = 'arn:aws:iam:::role/dmctl-readonly';
    const s = await run(['snapshots', '--json'], role);
    assert.equal(s.code, 0, show(s));
    assert.equal(json<unknown[]>(s).length, 1);
    const r = await run(['restore-stream', 'latest'], role);
    assert.equal(r.code, 0, show(r));
    assert.equal(sha(r.stdout), sha(stream));
    const b = await run(['backup-stream', '-q', '--name', 'db2.dump'], role, Buffer.from('more data'));
    assert.equal(b.code, 4, show(b));
    assert.match(b.stderr, /access denied/i);
  });

  it('an unknown role: one line naming the role, exit 4, no secret echoed', async () => {
    const r = await run(['snapshots'], 'arn:aws:iam:::role/no-such-role');
    assert.equal(r.code, 4, show(r));
    const errors = r.stderr.split('\n').filter((l) => l.startsWith('dmctl:'));
    assert.equal(errors.length, 1, r.stderr);
    assert.match(errors[0], /assuming the AWS role arn:aws:iam:::role\/no-such-role/);
    assert.ok(!r.stderr.includes(rgw.secretAccessKey) && !r.stdout.toString().includes(rgw.secretAccessKey), 'the secret key is not echoed');
    assert.ok(!/\n\s+at /.test(r.stderr), 'no stack trace');
  });
});
