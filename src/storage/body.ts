// Response bodies into one Buffer. When the length is announced (Content-Length), the buffer is
// allocated once and chunks are copied into it as they arrive: no list of chunks plus a
// concatenated copy (twice the memory of every pack being downloaded).
export async function readBody(stream: AsyncIterable<Uint8Array> | NodeJS.ReadableStream | undefined, expectedLength?: number): Promise<Buffer> {
  if (!stream) return Buffer.alloc(0);
  const it = stream as AsyncIterable<Uint8Array>;
  if (expectedLength === undefined || !Number.isSafeInteger(expectedLength) || expectedLength <= 0) {
    const parts: Uint8Array[] = [];
    let n = 0;
    for await (const c of it) {
      parts.push(c);
      n += c.length;
    }
    return Buffer.concat(parts, n);
  }
  let buf = Buffer.allocUnsafe(expectedLength);
  let used = 0;
  for await (const c of it) {
    if (used + c.length > buf.length) {
      // More than announced (a misbehaving server): grow rather than drop data; the caller's
      // length checks decide what that means.
      const bigger = Buffer.allocUnsafe(Math.max(buf.length * 2, used + c.length));
      buf.copy(bigger, 0, 0, used);
      buf = bigger;
    }
    buf.set(c, used);
    used += c.length;
  }
  return used === buf.length ? buf : buf.subarray(0, used);
}

/**
 * A response body copied into `dest` as it arrives (a restore's read ring): no buffer of its own.
 * Returns how many bytes the body had; those past `dest`'s end are counted, not kept.
 */
export async function readBodyInto(stream: AsyncIterable<Uint8Array> | NodeJS.ReadableStream | undefined, dest: Buffer): Promise<number> {
  if (!stream) return 0;
  let used = 0;
  for await (const c of stream as AsyncIterable<Uint8Array>) {
    if (used < dest.length) dest.set(c.length <= dest.length - used ? c : c.subarray(0, dest.length - used), used);
    used += c.length;
  }
  return used;
}
