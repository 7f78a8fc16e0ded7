// A full garbage collection on demand. Buffers of finished blobs are freed only when V8 collects
// their wrappers, and between major collections that garbage makes the peak memory of a long stream
// drift with its length; collecting every few packs keeps the peak flat. Node exposes gc() only
// with --expose-gc; setting the flag at run time makes it available in a fresh context.
import v8 from 'node:v8';
import vm from 'node:vm';

let gcFn: ((opts?: { type: 'minor' | 'major' }) => void) | undefined | null = null;

export function collectGarbage(): void {
  exposeGc();
  gcFn?.();
}

/** A young-generation collection only (well under a millisecond for a worker's small heap). */
export function collectYoung(): void {
  exposeGc();
  gcFn?.({ type: 'minor' });
}

function exposeGc(): void {
  if (gcFn === null) {
    try {
      v8.setFlagsFromString('--expose-gc');
      gcFn = vm.runInNewContext('gc') as () => void;
    } catch {
      gcFn = undefined;
    }
  }
}
