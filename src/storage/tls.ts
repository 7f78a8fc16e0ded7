// TLS settings shared by the HTTP-based providers: --cacert (extra trusted CA, PEM) and
// --insecure-tls (no certificate verification). Each SDK takes them its own way (S3: the smithy
// request handler's agents; Azure: the pipeline's `agent`; GCS: see gcs.ts); this module builds
// the one https.Agent configuration they all use.
import https from 'node:https';

export interface TlsOptions {
  /** PEM text of the CA certificate(s) to trust instead of the system roots (--cacert). */
  ca?: string | Buffer;
  /** Accept any server certificate (--insecure-tls). */
  insecureTls?: boolean;
}

/** True when the options change how server certificates are checked. */
export function customTls(t: TlsOptions): boolean {
  return Boolean(t.insecureTls) || t.ca !== undefined;
}

/** https.Agent options for these TLS settings (keep-alive on; `extra` wins for anything else). */
export function httpsAgentOptions(t: TlsOptions, extra: https.AgentOptions = {}): https.AgentOptions {
  const opts: https.AgentOptions = { keepAlive: true, ...extra, rejectUnauthorized: !t.insecureTls };
  if (t.ca !== undefined) opts.ca = t.ca;
  return opts;
}

/** `host:port` of an https URL as an agent sees it (port 443 when the URL has none). */
export function hostPortOf(url: URL | string): string {
  const u = typeof url === 'string' ? new URL(url) : url;
  const host = u.hostname.replace(/^\[(.*)\]$/, '$1');
  return `${host}:${u.port || (u.protocol === 'http:' ? 80 : 443)}`;
}
