// TLS material for the server: load a certificate and key, or generate a self-signed pair, and compute the
// SHA-256 fingerprint clients pin (lowercase hex of sha256 over the certificate's DER bytes).
import crypto from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import selfsigned from 'selfsigned';
import { DmctlError } from '../core/errors.js';

export interface TlsMaterial {
  cert: string;
  key: string;
  fingerprint: string;
}

/** Lowercase hex SHA-256 of the first certificate's DER bytes in a PEM string. */
export function certFingerprint(certPem: string): string {
  const x = new crypto.X509Certificate(certPem);
  return crypto.createHash('sha256').update(x.raw).digest('hex');
}

/** Normalises a user-given fingerprint: accepts `AB:CD:..`, upper case, `sha256:` prefix. */
export function normalizeFingerprint(fp: string): string {
  return fp.trim().toLowerCase().replace(/^sha256:/, '').replace(/[:\s]/g, '');
}

export async function loadTls(certFile: string, keyFile: string): Promise<TlsMaterial> {
  let cert: string, key: string;
  try {
    [cert, key] = await Promise.all([fsp.readFile(certFile, 'utf8'), fsp.readFile(keyFile, 'utf8')]);
  } catch (err) {
    throw new DmctlError('tls', `cannot read TLS certificate or key: ${(err as Error).message}`, { cause: err, hint: 'check --tls-cert-file and --tls-key-file' });
  }
  try {
    crypto.createPrivateKey(key);
    return { cert, key, fingerprint: certFingerprint(cert) };
  } catch (err) {
    throw new DmctlError('tls', `invalid TLS certificate or key (${certFile}, ${keyFile})`, { cause: err, hint: 'both files must be PEM' });
  }
}

/** Generates a self-signed certificate for the given host names / IP addresses (2048-bit RSA, SHA-256). */
export function generateSelfSigned(hosts: string[] = ['localhost', '127.0.0.1'], days = 3650): TlsMaterial {
  const { publicKey, privateKey } = crypto.generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  const altNames = hosts.map((h) => (/^[\d.]+$/.test(h) || h.includes(':') ? { type: 7, ip: h } : { type: 2, value: h }));
  const opts = {
    days,
    algorithm: 'sha256',
    keyPair: { publicKey, privateKey },
    extensions: [
      { name: 'basicConstraints', cA: true },
      { name: 'keyUsage', keyCertSign: true, digitalSignature: true, keyEncipherment: true },
      { name: 'extKeyUsage', serverAuth: true },
      { name: 'subjectAltName', altNames },
    ],
  };
  const pems = selfsigned.generate([{ name: 'commonName', value: hosts[0] ?? 'dmctl-server' }], opts as Parameters<typeof selfsigned.generate>[1]);
  return { cert: pems.cert, key: privateKey, fingerprint: certFingerprint(pems.cert) };
}

/** Writes cert (0644) and key (0600) files. */
export async function writeTls(t: TlsMaterial, certFile: string, keyFile: string): Promise<void> {
  await fsp.mkdir(path.dirname(path.resolve(certFile)), { recursive: true });
  await fsp.mkdir(path.dirname(path.resolve(keyFile)), { recursive: true });
  await fsp.writeFile(certFile, t.cert, { mode: 0o644 });
  await fsp.writeFile(keyFile, t.key, { mode: 0o600 });
}
