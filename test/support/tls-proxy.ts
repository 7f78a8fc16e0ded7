// TLS for test servers that speak plain HTTP only (radosgw, the GCS emulator): a test CA and a
// server certificate for 127.0.0.1 made with openssl, and a TLS-terminating TCP proxy that
// presents that certificate and pipes the decrypted bytes to the plain server.
import { execFile } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface TestCertificates {
  /** PEM file of the CA that signed the server certificate (what --cacert gets). */
  caFile: string;
  /** Server certificate (CN and SAN 127.0.0.1, localhost) and its key, PEM files. */
  certFile: string;
  keyFile: string;
  cert: Buffer;
  key: Buffer;
}

/** A fresh CA and a server certificate it signed, in `dir` (valid for two days). */
export async function makeTestCertificates(dir: string): Promise<TestCertificates> {
  await fsp.mkdir(dir, { recursive: true });
  const f = (n: string) => path.join(dir, n);
  await run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', f('ca.key'), '-out', f('ca.pem'), '-days', '2',
    '-subj', '/CN=dmctl test CA', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  await run('openssl', ['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', f('server.key'), '-out', f('server.csr'), '-subj', '/CN=127.0.0.1']);
  await fsp.writeFile(f('server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n');
  await run('openssl', ['x509', '-req', '-in', f('server.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-out', f('server.pem'), '-days', '2', '-extfile', f('server.ext')]);
  return { caFile: f('ca.pem'), certFile: f('server.pem'), keyFile: f('server.key'), cert: await fsp.readFile(f('server.pem')), key: await fsp.readFile(f('server.key')) };
}

export interface TlsProxy {
  /** https://127.0.0.1:PORT */
  url: string;
  port: number;
  /** TLS connections accepted so far (handshake finished). */
  connections: number;
  stop(): Promise<void>;
}

/**
 * Listens with TLS on a free 127.0.0.1 port and forwards every connection to 127.0.0.1:upstreamPort.
 * `rewriteLocation`: forward at the HTTP level instead and turn `Location: http://…` answers into
 * https (the GCS emulator builds resumable-upload URLs from the protocol it sees itself).
 */
export async function startTlsProxy(upstreamPort: number, certs: { cert: Buffer; key: Buffer }, opts: { rewriteLocation?: boolean } = {}): Promise<TlsProxy> {
  const sockets = new Set<net.Socket>();
  const proxy: TlsProxy = { url: '', port: 0, connections: 0, stop: async () => {} };
  const track = (s: net.Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  };
  let server: tls.Server;
  if (opts.rewriteLocation) {
    const agent = new http.Agent({ keepAlive: true });
    const srv = https.createServer({ cert: certs.cert, key: certs.key }, (req, res) => {
      const preq = http.request({ host: '127.0.0.1', port: upstreamPort, method: req.method, path: req.url, headers: req.headers, agent }, (pres) => {
        const headers = { ...pres.headers };
        if (typeof headers.location === 'string') headers.location = headers.location.replace(/^http:/, 'https:');
        res.writeHead(pres.statusCode ?? 502, headers);
        pres.pipe(res);
      });
      preq.on('error', () => req.socket.destroy());
      req.pipe(preq);
    });
    srv.on('secureConnection', () => proxy.connections++);
    const stopAgent = () => agent.destroy();
    srv.on('close', stopAgent);
    server = srv;
  } else {
    server = tls.createServer({ cert: certs.cert, key: certs.key }, (client) => {
      proxy.connections++;
      const up = net.connect(upstreamPort, '127.0.0.1');
      track(up);
      const end = () => {
        client.destroy();
        up.destroy();
      };
      client.on('error', end);
      up.on('error', end);
      client.pipe(up);
      up.pipe(client);
    });
  }
  // A client that refuses our certificate aborts the handshake: not an error of the proxy.
  server.on('tlsClientError', () => {});
  server.on('connection', track);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  proxy.port = (server.address() as net.AddressInfo).port;
  proxy.url = `https://127.0.0.1:${proxy.port}`;
  proxy.stop = async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  return proxy;
}
