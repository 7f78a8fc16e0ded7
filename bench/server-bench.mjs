#!/usr/bin/env node
// Side-by-side load on dmctl's REST server and `rclone serve restic`, same local disk, one after the other:
// N concurrent restic clients each back up their own random data into one shared repository.
// Prints ingest throughput, the dmctl/rclone ratio, p99 request latency (dmctl: from its per-request log)
// and p99 client backup time (both), then checks every snapshot is there.
// Usage: node bench/server-bench.mjs [--clients 20] [--mib 8] [--rounds 1]   (build first: npx tsc -p .)
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const arg = (n, d) => {
  const i = process.argv.indexOf(`--${n}`);
  return i > 0 ? Number(process.argv[i + 1]) : d;
};
const CLIENTS = arg('clients', 20);
const MIB = arg('mib', 8);
const ROUNDS = arg('rounds', 1);
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dmctl-server-bench-'));
const PW = 'bench-pw';

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = s.address().port;
      s.close(() => resolve(p));
    });
  });
}

function run(cmd, args, env = {}) {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (c) => (out += c));
    p.stderr.on('data', (c) => (err += c));
    p.on('close', (code) => resolve({ code, out, err }));
  });
}

async function waitPort(port) {
  for (let i = 0; i < 200; i++) {
    const ok = await new Promise((r) => {
      const s = net.connect(port, '127.0.0.1', () => (s.destroy(), r(true)));
      s.on('error', () => r(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`port ${port} did not open`);
}

const p99 = (xs) => {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil(s.length * 0.99) - 1)];
};

// Data: each client its own folder of random files (a few sizes), created once, reused for both servers.
const dataDirs = [];
let totalBytes = 0;
for (let c = 0; c < CLIENTS; c++) {
  const d = path.join(work, 'src', `client-${c}`);
  fs.mkdirSync(d, { recursive: true });
  let left = MIB * 1024 * 1024;
  let i = 0;
  while (left > 0) {
    const n = Math.min(left, [3 << 20, 512 << 10, 40 << 10, 2000][i % 4]);
    fs.writeFileSync(path.join(d, `f${i++}`), crypto.randomBytes(n));
    left -= n;
    totalBytes += n;
  }
  dataDirs.push(d);
}

async function load(name, startServer) {
  const port = await freePort();
  const repoDir = path.join(work, `${name}-repo`);
  const srv = await startServer(port, repoDir);
  try {
    return await measure(name, srv, port);
  } catch (err) {
    // Stop the server before the work dir goes, and keep the real error visible.
    await srv.stop();
    throw err;
  }
}

async function measure(name, srv, port) {
  await waitPort(port);
  const repo = `rest:http://bench:${PW}@127.0.0.1:${port}/`;
  const env = { RESTIC_REPOSITORY: repo, RESTIC_PASSWORD: PW };
  const init = await run('restic', ['init'], env);
  if (init.code !== 0) throw new Error(`${name}: init failed: ${init.err}`);
  const clientTimes = [];
  const t0 = process.hrtime.bigint();
  for (let r = 0; r < ROUNDS; r++) {
    // each round adds a new file per client so later rounds also upload
    if (r > 0) for (const d of dataDirs) fs.writeFileSync(path.join(d, `round-${r}`), crypto.randomBytes(MIB * 1024 * 1024 / 4));
    await Promise.all(
      dataDirs.map(async (d, c) => {
        const c0 = process.hrtime.bigint();
        const res = await run('restic', ['--no-cache', 'backup', '--host', `client-${c}`, d], env);
        if (res.code !== 0) throw new Error(`${name}: client ${c} failed: ${res.err}`);
        clientTimes.push(Number(process.hrtime.bigint() - c0) / 1e6);
      }),
    );
  }
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  const snaps = JSON.parse((await run('restic', ['--no-cache', 'snapshots', '--json'], env)).out);
  const check = await run('restic', ['--no-cache', 'check'], env);
  const rss = srv.rss();
  const latencies = await srv.stop();
  let ingested = ROUNDS > 1 ? totalBytes + (ROUNDS - 1) * CLIENTS * (MIB * 1024 * 1024 / 4) : totalBytes;
  return { name, secs, mibPerSec: ingested / 1048576 / secs, snapshots: snaps.length, expected: CLIENTS * ROUNDS, check: check.code === 0, clientP99: p99(clientTimes), reqP99: p99(latencies), reqs: latencies.length, peakRssMiB: rss };
}

function peakRss(pid) {
  try {
    const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = /VmHWM:\s+(\d+) kB/.exec(s);
    return m ? Math.round(Number(m[1]) / 1024) : NaN;
  } catch {
    return NaN;
  }
}

async function dmctlServer(port, repoDir) {
  const usersFile = path.join(work, 'users.json');
  const pwFile = path.join(work, 'pw');
  fs.writeFileSync(pwFile, PW);
  if (!fs.existsSync(usersFile)) {
    const r = await run(process.execPath, [path.join(root, 'bin/run.js'), 'server', 'users', 'add', 'bench', '--role', 'full', '--password-file', pwFile, '--users-file', usersFile]);
    if (r.code !== 0) throw new Error(r.err);
  }
  const p = spawn(process.execPath, [path.join(root, 'bin/run.js'), 'server', 'start', '--repo', repoDir, '--insecure-http', '--address', `127.0.0.1:${port}`, '--users-file', usersFile], { stdio: ['ignore', 'pipe', 'pipe'] });
  let buf = '';
  const lat = [];
  p.stdout.on('data', (c) => {
    buf += c;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      try {
        const e = JSON.parse(line);
        if (e.msg === 'request') lat.push(e.ms);
      } catch {}
    }
  });
  p.stderr.resume();
  return {
    rss: () => peakRss(p.pid),
    stop: () => new Promise((r) => (p.once('exit', () => r(lat)), process.kill(p.pid, 'SIGTERM'))),
  };
}

async function rcloneServer(port, repoDir) {
  fs.mkdirSync(repoDir, { recursive: true });
  const p = spawn('rclone', ['serve', 'restic', '--addr', `127.0.0.1:${port}`, '--user', 'bench', '--pass', PW, repoDir], { stdio: ['ignore', 'ignore', 'pipe'] });
  p.stderr.resume();
  return {
    rss: () => peakRss(p.pid),
    stop: () => new Promise((r) => (p.once('exit', () => r([])), process.kill(p.pid, 'SIGTERM'))),
  };
}

try {
  console.error(`${CLIENTS} clients x ${MIB} MiB x ${ROUNDS} round(s), work dir ${work}`);
  const a = await load('dmctl', dmctlServer);
  const b = await load('rclone', rcloneServer);
  const fmt = (x) => (Number.isFinite(x) ? x.toFixed(1) : 'n/a');
  console.log('| server | wall s | MiB/s | p99 request ms | p99 client backup ms | requests logged | snapshots | check | peak RSS MiB |');
  console.log('|---|---|---|---|---|---|---|---|---|');
  for (const r of [a, b]) console.log(`| ${r.name} | ${fmt(r.secs)} | ${fmt(r.mibPerSec)} | ${fmt(r.reqP99)} | ${fmt(r.clientP99)} | ${r.reqs || 'n/a'} | ${r.snapshots}/${r.expected} | ${r.check ? 'ok' : 'FAILED'} | ${r.peakRssMiB} |`);
  console.log(`\nthroughput ratio dmctl/rclone: ${(a.mibPerSec / b.mibPerSec).toFixed(2)}`);
  if (a.snapshots !== a.expected || !a.check) process.exitCode = 1;
} finally {
  fs.rmSync(work, { recursive: true, force: true, maxRetries: 5 });
}
