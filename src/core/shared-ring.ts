// A ring of shared memory whose regions are held while another thread reads or writes them.
//
// The stream path uses two: chunks are read into one and handed to the seal workers by offset
// (archiver/chunk-ring.ts), and the workers write sealed blobs into another that the pack writer
// writes out from (repository/seal-pool.ts). Nothing is allocated per chunk or per blob, so the
// memory a stream uses is these rings whatever its length, not whatever the allocator makes of
// a few thousand buffers of different sizes.

export class SharedRing {
  readonly sab: SharedArrayBuffer;
  readonly bytes: Buffer;
  /** Held regions: start offset → end offset. */
  private readonly held = new Map<number, number>();
  private waiters: (() => void)[] = [];
  /** Where take() allocates next. */
  private next = 0;

  constructor(readonly size: number) {
    this.sab = new SharedArrayBuffer(size);
    this.bytes = Buffer.from(this.sab);
  }

  hold(start: number, end: number): void {
    this.held.set(start, end);
  }

  release(start: number): void {
    if (!this.held.delete(start)) return;
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Resolves once no held region overlaps [start, end). */
  async free(start: number, end: number): Promise<void> {
    for (;;) {
      let busy = false;
      for (const [s, e] of this.held) if (s < end && start < e) busy = true;
      if (!busy) return;
      await new Promise<void>((r) => this.waiters.push(r));
    }
  }

  /** Holds the next `len` bytes in ring order (waiting for them to be released) and returns their offset. */
  async take(len: number): Promise<number> {
    if (len > this.size) throw new RangeError(`SharedRing: ${len} bytes asked of a ring of ${this.size}`);
    for (;;) {
      if (this.next + len > this.size) this.next = 0;
      const start = this.next;
      await this.free(start, start + len);
      // Another take may have moved on while this one waited.
      if (start !== this.next) continue;
      this.next = start + len;
      this.hold(start, start + len);
      return start;
    }
  }

  /** Resolves once nothing is held. */
  async drain(): Promise<void> {
    while (this.held.size) await new Promise<void>((r) => this.waiters.push(r));
  }
}
