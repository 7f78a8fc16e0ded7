// A loopback HTTP proxy for fault tests: forwards requests to an upstream server and, for a share
// of them, delays, resets the connection (before or in the middle of the response) or answers
// 500/503 itself. Seeded, so a failing run can be repeated. Also records requests (method, URL,
// headers) for request-layer assertions.
import http from 'node:http';
import net from 'node:net';

export interface FaultPlan {
  /** Shares in [0,1] of requests that get each fault (checked in this order). */
  reset?: number;
  resetMidBody?: number;
  error500?: number;
  error503?: number;
  delay?: number;
  /** Delay in ms for `delay` faults (default 300). */
  delayMs?: number;
  /** Requests that never get an answer (stuck) share. */
  stall?: number;
}

export interface RecordedRequest {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
}

export interface FaultProxy {
  url: string;
  port: number;
  plan: FaultPlan;
  stats: { requests: number; resets: number; errors: number; delays: number; stalls: number; passed: number };
  recorded: RecordedRequest[];
  stop(): Promise<void>;
}

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export async function startFaultProxy(upstream: string, plan: FaultPlan = {}, seed = 1): Promise<FaultProxy> {
  const up = new URL(upstream);
  const rnd = mulberry32(seed);
  const stats = { requests: 0, resets: 0, errors: 0, delays: 0, stalls: 0, passed: 0 };
  const recorded: RecordedRequest[] = [];
  const sockets = new Set<net.Socket>();
  const agent = new http.Agent({ keepAlive: true, maxSockets: 32 });
  const proxy: FaultProxy = { url: '', port: 0, plan, stats, recorded, stop: async () => {} };

  const server = http.createServer((req, res) => {
    stats.requests++;
    recorded.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    const p = proxy.plan;
    const r = rnd();
    let acc = 0;
    const pick = (share: number | undefined) => {
      const lo = acc;
      acc += share ?? 0;
      return r >= lo && r < acc;
    };
    if (pick(p.reset)) {
      stats.resets++;
      req.socket.destroy();
      return;
    }
    const midBody = pick(p.resetMidBody);
    const code = pick(p.error500) ? 500 : pick(p.error503) ? 503 : 0;
    if (code) {
      stats.errors++;
      req.resume();
      req.on('end', () => {
        const body = code === 503
          ? '<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>'
          : '<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code><Message>injected</Message></Error>';
        res.writeHead(code, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body), connection: 'close' });
        res.end(body);
      });
      return;
    }
    if (pick(p.stall)) {
      stats.stalls++;
      req.resume(); // swallow the request and never answer
      return;
    }
    const delayed = pick(p.delay);
    const forward = () => {
      const headers = { ...req.headers }; // keep Host: it is part of S3 signatures
      const preq = http.request({ host: up.hostname, port: up.port, method: req.method, path: req.url, headers, agent }, (pres) => {
        res.writeHead(pres.statusCode ?? 502, pres.headers);
        // (a HEAD answer has a content-length but no body: waiting for its first chunk would hang)
        if (midBody && req.method !== 'HEAD' && Number(pres.headers['content-length'] ?? 0) > 16) {
          stats.resets++;
          let sent = false;
          pres.once('data', (c: Buffer) => {
            if (sent) return;
            sent = true;
            res.write(c.subarray(0, Math.max(1, c.length >> 1)), () => req.socket.destroy());
            pres.destroy();
          });
          return;
        }
        stats.passed++;
        pres.pipe(res);
      });
      preq.on('error', () => req.socket.destroy());
      req.pipe(preq);
    };
    if (delayed) {
      stats.delays++;
      req.pause();
      setTimeout(() => {
        req.resume();
        forward();
      }, p.delayMs ?? 300);
    } else forward();
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  proxy.port = (server.address() as net.AddressInfo).port;
  proxy.url = `http://127.0.0.1:${proxy.port}`;
  proxy.stop = async () => {
    for (const s of sockets) s.destroy();
    agent.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  return proxy;
}
