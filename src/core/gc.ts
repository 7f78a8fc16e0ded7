// A full garbage collection on demand. Buffers of finished blobs are freed only when V8 collects
// their wrappers, and between major collections that garbage makes the peak memory of a long stream
// drift with its length; collecting every few packs keeps the peak flat. Node exposes gc() only
// with --expose-gc; setting the flag at run time makes it available in a fresh context.
import v8 from 'node:v8';
import vm from 'node:vm';

let gcFn: (() => void) | undefined | null = null;

export function collectGarbage(): void {
  if (gcFn === null) {
    try {
      v8.setFlagsFromString('--expose-gc');
      gcFn = vm.runInNewContext('gc') as () => void;
    } catch {
      gcFn = undefined;
    }
  }
  gcFn?.();
}
