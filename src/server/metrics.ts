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
  memoryLimit = 0;
  budgetRejections = 0;

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
    lines.push('# HELP dmctl_server_buffer_limit_bytes The memory budget for request/response bodies.');
    lines.push('# TYPE dmctl_server_buffer_limit_bytes gauge');
    lines.push(`dmctl_server_buffer_limit_bytes ${this.memoryLimit}`);
    lines.push('# HELP dmctl_server_budget_rejections_total Requests answered 503 because the memory budget stayed spent.');
    lines.push('# TYPE dmctl_server_budget_rejections_total counter');
    lines.push(`dmctl_server_budget_rejections_total ${this.budgetRejections}`);
    lines.push('# HELP dmctl_server_uptime_seconds Seconds since the server started.');
    lines.push('# TYPE dmctl_server_uptime_seconds gauge');
    lines.push(`dmctl_server_uptime_seconds ${((Date.now() - this.started) / 1000).toFixed(3)}`);
    return lines.join('\n') + '\n';
  }
}

/**
 * A byte budget shared by all requests that hold bodies in memory. A request reserves what it will hold
 * (an upload exactly its Content-Length) before reading anything. When the budget is spent it waits in
 * order for at most `waitMs`, then gets nothing (the server answers 503 with Retry-After): the queue is
 * bounded in time, and a waiting request holds no body (its bytes stay in the client's socket).
 */
export class MemoryBudget {
  private used = 0;
  private queue: { n: number; grant: () => void }[] = [];
  /** Requests turned away because the budget stayed spent for their whole wait. */
  rejected = 0;

  constructor(readonly limit: number, private readonly onChange?: (used: number) => void) {}

  get inUse(): number {
    return this.used;
  }

  get waiting(): number {
    return this.queue.length;
  }

  /**
   * Reserves `n` bytes: resolves with a release function, or with undefined when they could not be had
   * within `waitMs`. `n` above the limit can never be had (callers refuse such sizes up front).
   */
  async tryAcquire(n: number, waitMs: number): Promise<(() => void) | undefined> {
    if (n > this.limit) return undefined;
    if (this.queue.length === 0 && this.used + n <= this.limit) {
      this.take(n);
      return this.releaser(n);
    }
    if (waitMs <= 0) {
      this.rejected++;
      return undefined;
    }
    const granted = await new Promise<boolean>((resolve) => {
      const entry = {
        n,
        grant: () => {
          clearTimeout(timer);
          resolve(true);
        },
      };
      const timer = setTimeout(() => {
        const i = this.queue.indexOf(entry);
        if (i >= 0) this.queue.splice(i, 1);
        // The head may have been the one that did not fit: others behind it may fit now.
        this.drain();
        resolve(false);
      }, waitMs);
      this.queue.push(entry);
    });
    if (!granted) {
      this.rejected++;
      return undefined;
    }
    return this.releaser(n);
  }

  private take(n: number): void {
    this.used += n;
    this.onChange?.(this.used);
  }

  private releaser(n: number): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.used -= n;
      this.onChange?.(this.used);
      this.drain();
    };
  }

  private drain(): void {
    while (this.queue.length && this.used + this.queue[0].n <= this.limit) {
      const w = this.queue.shift()!;
      this.take(w.n);
      w.grant();
    }
  }
}
