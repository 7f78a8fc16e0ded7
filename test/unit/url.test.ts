import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { parseRepositoryUrl, redactUrl } from '../../src/storage/url.js';
import { UsageError, EXIT_CODES } from '../../src/core/errors.js';

const usage = (fn: () => unknown, re: RegExp) =>
  assert.throws(fn, (e: unknown) => e instanceof UsageError && e.exitCode === EXIT_CODES.USAGE && re.test(e.message) && !e.message.includes('\n'));

describe('parseRepositoryUrl', () => {
  it('local paths, with and without local:', () => {
    assert.deepEqual(parseRepositoryUrl('/srv/repo'), { scheme: 'local', path: '/srv/repo', display: 'local:/srv/repo' });
    assert.deepEqual(parseRepositoryUrl('local:/srv/repo'), { scheme: 'local', path: '/srv/repo', display: 'local:/srv/repo' });
    assert.equal((parseRepositoryUrl('rel/repo') as { path: string }).path, path.resolve('rel/repo'));
    assert.equal((parseRepositoryUrl('./a:b') as { path: string }).path, path.resolve('./a:b'));
  });

  it('s3 with a custom endpoint, http and https, prefix cleaned', () => {
    assert.deepEqual(parseRepositoryUrl('s3:http://127.0.0.1:7480/bucket/some//prefix/'), {
      scheme: 's3', endpoint: 'http://127.0.0.1:7480', region: undefined, bucket: 'bucket', prefix: 'some/prefix', display: 's3:http://127.0.0.1:7480/bucket/some/prefix',
    });
    const m = parseRepositoryUrl('s3:minio.local:9000/bkt');
    assert.equal(m.scheme === 's3' && m.endpoint, 'https://minio.local:9000');
    assert.equal(m.scheme === 's3' && m.prefix, '');
  });

  it('s3 on AWS: no custom endpoint, region from a regional host', () => {
    const a = parseRepositoryUrl('s3:s3.amazonaws.com/my-bucket/restic');
    assert.ok(a.scheme === 's3');
    assert.equal(a.endpoint, undefined);
    assert.equal(a.region, undefined);
    assert.equal(a.bucket, 'my-bucket');
    assert.equal(a.prefix, 'restic');
    const b = parseRepositoryUrl('s3:https://s3.eu-west-1.amazonaws.com/b-1');
    assert.ok(b.scheme === 's3');
    assert.equal(b.region, 'eu-west-1');
    assert.equal(b.endpoint, undefined);
  });

  it('azure and gs: NAME:/PREFIX', () => {
    assert.deepEqual(parseRepositoryUrl('azure:backups:/prod/db'), { scheme: 'azure', container: 'backups', prefix: 'prod/db', display: 'azure:backups:/prod/db' });
    assert.deepEqual(parseRepositoryUrl('gs:bkt:/'), { scheme: 'gs', bucket: 'bkt', prefix: '', display: 'gs:bkt:/' });
  });

  it('rest: keeps credentials out of url and display, adds the trailing slash', () => {
    const r = parseRepositoryUrl('rest:https://alice:s%40cret@host:8000/repo');
    assert.ok(r.scheme === 'rest');
    assert.equal(r.url, 'https://host:8000/repo/');
    assert.equal(r.username, 'alice');
    assert.equal(r.password, 's@cret');
    assert.equal(r.display, 'rest:https://alice:***@host:8000/repo/');
    assert.ok(!r.display.includes('cret'));
  });

  it('rejects unknown schemes, unsupported ones and malformed URLs with usage errors', () => {
    usage(() => parseRepositoryUrl('ftp://host/x'), /unknown repository URL scheme "ftp:"/);
    usage(() => parseRepositoryUrl('sftp:host:/x'), /not supported/);
    usage(() => parseRepositoryUrl('s3:http://host:9000/'), /no bucket/);
    usage(() => parseRepositoryUrl('s3:http://host:9000/p1/repo'), /bucket name "p1" in repository URL: too short/);
    usage(() => parseRepositoryUrl('gs:ab:/x'), /bucket name "ab".*too short/);
    usage(() => parseRepositoryUrl('azure:c:/x'), /container name "c".*too short/);
    usage(() => parseRepositoryUrl('s3:http://host:9000/-bucket'), /invalid bucket name "-bucket"/);
    assert.equal((parseRepositoryUrl('s3:http://host:9000/abc/x') as { bucket: string }).bucket, 'abc');
    usage(() => parseRepositoryUrl('azure:nocolon'), /invalid repository URL/);
    usage(() => parseRepositoryUrl('gs:bkt:/a/../b'), /'\.\.' is not allowed/);
    usage(() => parseRepositoryUrl('rest:ftp://u:pw@h/'), /needs http/);
    usage(() => parseRepositoryUrl(''), /no repository location/);
    assert.throws(() => parseRepositoryUrl('rest:http://u:topsecret@[bad/'), (e: unknown) => e instanceof UsageError && !e.message.includes('topsecret'));
  });

  it('redactUrl hides passwords', () => {
    assert.equal(redactUrl('rest:http://u:pw@h:1/x'), 'rest:http://u:***@h:1/x');
  });
});
