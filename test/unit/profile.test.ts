import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseProfile, profileLocation, profileOptions } from '../../src/kanister/profile.js';
import { UsageError, EXIT_CODES } from '../../src/core/errors.js';

const b64 = (s: string) => Buffer.from(s).toString('base64');
const usage = (json: string, re: RegExp, secret?: string) =>
  assert.throws(() => parseProfile(json), (e: unknown) => {
    assert.ok(e instanceof UsageError, String(e));
    assert.equal(e.exitCode, EXIT_CODES.USAGE);
    assert.match(e.message, re);
    assert.ok(!e.message.includes('\n'));
    if (secret) assert.ok(!e.message.includes(secret) && !(e.hint ?? '').includes(secret), e.message);
    return true;
  });

describe('Kanister Profile JSON', () => {
  it('s3Compliant with a keyPair, as toJson renders it', () => {
    const p = parseProfile(JSON.stringify({
      Location: { type: 's3Compliant', bucket: 'bkt', endpoint: 'http://minio:9000', prefix: '/k10/app/', region: 'us-west-2' },
      Credential: { Type: 'keyPair', KeyPair: { ID: 'AKID', Secret: 'SK' }, Secret: null, KopiaServerSecret: null },
      SkipSSLVerify: true,
    }));
    assert.equal(p.type, 's3Compliant');
    assert.equal(p.prefix, 'k10/app');
    assert.deepEqual(p.credentials, { s3: { accessKeyId: 'AKID', secretAccessKey: 'SK' } });
    assert.equal(p.skipSSLVerify, true);
    assert.deepEqual(profileLocation(p, 'repo/x'), { scheme: 's3', endpoint: 'http://minio:9000', region: 'us-west-2', bucket: 'bkt', prefix: 'k10/app/repo/x', display: 's3:http://minio:9000/bkt/k10/app/repo/x' });
    const o = profileOptions(p, { connections: 3 });
    assert.equal(o.insecureTls, true);
    assert.equal(o.connections, 3);
    assert.deepEqual(o.profile?.s3, { accessKeyId: 'AKID', secretAccessKey: 'SK' });
  });

  it('matches keys case-insensitively and maps AWS endpoints back to the SDK default', () => {
    const p = parseProfile('{"location":{"TYPE":"S3COMPLIANT","Bucket":"b2","ENDPOINT":"s3.amazonaws.com"},"credential":{"type":"KeyPair","keypair":{"id":"a","secret":"s"}},"skipsslverify":false}');
    const loc = profileLocation(p);
    assert.ok(loc.scheme === 's3');
    assert.equal(loc.endpoint, undefined);
    assert.equal(loc.bucket, 'b2');
    assert.deepEqual(p.credentials.s3, { accessKeyId: 'a', secretAccessKey: 's' });
  });

  it('secret credentials: AWS, Azure (with environment) and GCP Secrets with base64 data', () => {
    const aws = parseProfile(JSON.stringify({ Location: { type: 's3Compliant', bucket: 'b' }, Credential: { Type: 'secret', Secret: { type: 'secrets.kanister.io/aws', data: { aws_access_key_id: b64('AK'), aws_secret_access_key: b64('SK') } } } }));
    assert.deepEqual(aws.credentials.s3, { accessKeyId: 'AK', secretAccessKey: 'SK' });
    const az = parseProfile(JSON.stringify({ Location: { type: 'azure', bucket: 'ctr', prefix: 'p' }, Credential: { Type: 'secret', Secret: { data: { azure_storage_account_id: b64('acct'), azure_storage_key: b64('KEY'), azure_storage_environment: b64('AzureChinaCloud') } } } }));
    assert.deepEqual(az.credentials.azure, { accountName: 'acct', accountKey: 'KEY' });
    assert.deepEqual(profileLocation(az), { scheme: 'azure', container: 'ctr', prefix: 'p', endpoint: 'https://acct.blob.core.chinacloudapi.cn', display: 'azure:ctr:/p' });
    const gcp = parseProfile(JSON.stringify({ Location: { type: 'gcs', bucket: 'g' }, Credential: { Type: 'secret', Secret: { data: { gcp_project_id: b64('proj'), 'service-account.json': b64('{"type":"service_account"}') } } } }));
    assert.deepEqual(gcp.credentials.gcs, { projectId: 'proj', credentialsJson: '{"type":"service_account"}' });
    assert.equal(profileLocation(gcp).scheme, 'gs');
  });

  it('keyPair for gcs and azure', () => {
    const g = parseProfile(JSON.stringify({ Location: { type: 'gcs', bucket: 'g' }, Credential: { Type: 'keyPair', KeyPair: { ID: 'proj', Secret: '{"k":1}' } } }));
    assert.deepEqual(g.credentials.gcs, { projectId: 'proj', credentialsJson: '{"k":1}' });
    const a = parseProfile(JSON.stringify({ Location: { type: 'azure', bucket: 'c' }, Credential: { Type: 'keyPair', KeyPair: { ID: 'acct', Secret: 'key' } } }));
    assert.deepEqual(a.credentials.azure, { accountName: 'acct', accountKey: 'key' });
  });

  it('no credential: the SDK default chains apply', () => {
    const p = parseProfile('{"Location":{"type":"s3Compliant","bucket":"b"},"Credential":null}');
    assert.deepEqual(p.credentials, {});
  });

  it('malformed or invalid profiles: one-line usage errors that never echo secrets', () => {
    const secret = 'TOPSECRET123';
    usage(`{"Location":{"type":"s3Compliant","bucket":"b"},"Credential":{"KeyPair":{"ID":"a","Secret":"${secret}"}`, /^invalid profile: not valid JSON/, secret);
    usage(`{"Location":{"type":"s3Compliant","bucket":"b"},"Credential":{"KeyPair":{"ID":"a","Secret":${secret}}}}`, /not valid JSON/, secret);
    usage('[]', /expected a JSON object/);
    usage('{"Credential":{}}', /no Location/);
    usage('{"Location":{"type":"ftp","bucket":"b"}}', /unknown Location.type/);
    usage('{"Location":{"type":"kopia","bucket":"b"}}', /kopia.*not supported/);
    usage('{"Location":{"type":"gcs"}}', /bucket is empty/);
    usage(`{"Location":{"type":"s3Compliant","bucket":"b"},"Credential":{"Type":"keyPair","KeyPair":{"ID":"","Secret":"${secret}"}}}`, /needs both ID and Secret/, secret);
    usage(`{"Location":{"type":"s3Compliant","bucket":"b"},"Credential":{"Type":"secret","Secret":{"data":{"aws_access_key_id":"${b64('a')}","aws_secret_access_key":"${b64(secret)}","extra":"${b64('x')}"}}}}`, /unexpected key "extra"/, b64(secret));
    usage('{"Location":{"type":"s3Compliant","bucket":"b"},"SkipSSLVerify":"yes"}', /SkipSSLVerify/);
    usage('{"Location":{"type":"s3Compliant","bucket":"b","prefix":"a/../../x"}}', /'\.\.' is not allowed/);
  });
});
