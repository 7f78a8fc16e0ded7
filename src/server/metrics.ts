// Server counters, rendered in the Prometheus text exposition format (version 0.0.4).

export class ServerMetrics {
  readonly started = Date.now();
  private requests = new Map<string, number>(); // `${type}\0${method}\0${status}`
  private bytesIn = new Map<string, number>();
  private bytesOut = new Map<string, number>();
  private durations: number[] = [];
  activeConnections = 0;
  authFailures = 0;
  memoryInUse = 0;

  request(type: string, method: string, status: number, seconds: number): void {
    const k = `${type}\0${method}\0${status}`;
    this.requests.set(k, (this.requests.get(k) ?? 0) + 1);
    if (this.durations.length >= 4096) this.durations.splice(0, 1024);
    this.durations.push(seconds);
  }

  received(type: string, n: number): void {
    this.bytesIn.set(type, (this.bytesIn.get(type) ?? 0) + n);
  }

  sent(type: string, n: number): void {
    this.bytesOut.set(type, (this.bytesOut.get(type) ?? 0) + n);
  }

  /** Totals for the status endpoint. */
  summary(): { requests: number; byStatus: Record<string, number>; bytesIn: number; bytesOut: number; authFailures: number; activeConnections: number } {
    const byStatus: Record<string, number> = {};
    let requests = 0;
    for (const [k, v] of this.requests) {
      const status = k.split('\0')[2];
      byStatus[status] = (byStatus[status] ?? 0) + v;
      requests += v;
    }
    const sum = (m: Map<string, number>) => [...m.values()].reduce((a, b) => a + b, 0);
    return { requests, byStatus, bytesIn: sum(this.bytesIn), bytesOut: sum(this.bytesOut), authFailures: this.authFailures, activeConnections: this.activeConnections };
  }

  render(): string {
    const esc = (s: string) => s.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
    const lines: string[] = [];
    lines.push('# HELP dmctl_server_requests_total REST requests by file type, method and status.');
    lines.push('# TYPE dmctl_server_requests_total counter');
    for (const [k, v] of [...this.requests].sort()) {
      const [type, method, status] = k.split('\0');
      lines.push(`dmctl_server_requests_total{type="${esc(type)}",method="${esc(method)}",status="${status}"} ${v}`);
    }
    lines.push('# HELP dmctl_server_received_bytes_total Request body bytes received, by file type.');
    lines.push('# TYPE dmctl_server_received_bytes_total counter');
    for (const [t, v] of [...this.bytesIn].sort()) lines.push(`dmctl_server_received_bytes_total{type="${esc(t)}"} ${v}`);
    lines.push('# HELP dmctl_server_sent_bytes_total Response body bytes sent, by file type.');
    lines.push('# TYPE dmctl_server_sent_bytes_total counter');
    for (const [t, v] of [...this.bytesOut].sort()) lines.push(`dmctl_server_sent_bytes_total{type="${esc(t)}"} ${v}`);
    lines.push('# HELP dmctl_server_active_connections Open client connections.');
    lines.push('# TYPE dmctl_server_active_connections gauge');
    lines.push(`dmctl_server_active_connections ${this.activeConnections}`);
    lines.push('# HELP dmctl_server_auth_failures_total Failed authentications.');
    lines.push('# TYPE dmctl_server_auth_failures_total counter');
    lines.push(`dmctl_server_auth_failures_total ${this.authFailures}`);
    lines.push('# HELP dmctl_server_buffer_bytes Bytes of request/response bodies held in memory.');
    lines.push('# TYPE dmctl_server_buffer_bytes gauge');
    lines.push(`dmctl_server_buffer_bytes ${this.memoryInUse}`);
    lines.push('# HELP dmctl_server_uptime_seconds Seconds since the server started.');
    lines.push('# TYPE dmctl_server_uptime_seconds gauge');
    lines.push(`dmctl_server_uptime_seconds ${((Date.now() - this.started) / 1000).toFixed(3)}`);
    return lines.join('\n') + '\n';
  }
}

/** A byte budget shared by all requests that hold bodies in memory; waiters are served in order. */
export class MemoryBudget {
  private used = 0;
  private queue: { n: number; resolve: () => void }[] = [];

  constructor(readonly limit: number, private readonly onChange?: (used: number) => void) {}

  get inUse(): number {
    return this.used;
  }

  async acquire(n: number): Promise<() => void> {
    const want = Math.min(n, this.limit);
    if (this.queue.length === 0 && this.used + want <= this.limit) {
      this.used += want;
      this.onChange?.(this.used);
    } else {
      await new Promise<void>((resolve) => this.queue.push({ n: want, resolve }));
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.used -= want;
      this.drain();
      this.onChange?.(this.used);
    };
  }

  private drain(): void {
    while (this.queue.length && this.used + this.queue[0].n <= this.limit) {
      const w = this.queue.shift()!;
      this.used += w.n;
      w.resolve();
    }
  }
}
