// Progress events: the core reports through one small callback; ui/ renders them (spinner or bar on
// a TTY, JSON lines otherwise). Nothing in the core knows about terminals.

export interface ProgressEvent {
  /** What is going on: 'scan', 'backup', 'restore', 'verify', 'prune', 'check', 'upload', ... */
  phase: string;
  /** Human label for the current item (a path, a pack id), optional. */
  item?: string;
  bytesDone?: number;
  bytesTotal?: number;
  filesDone?: number;
  filesTotal?: number;
  /** Free-form counters an operation wants to show (e.g. packs, blobs). */
  counters?: Record<string, number>;
  /** A non-fatal problem (unreadable file, retried request): shown as a warning line. */
  warning?: string;
  /** Set on the last event of a phase. */
  done?: boolean;
}

export type ProgressFn = (event: ProgressEvent) => void;

export const noProgress: ProgressFn = () => {};

/** Calls `fn` at most every `ms` milliseconds (the last event of a phase always goes through). */
export function throttleProgress(fn: ProgressFn, ms = 100): ProgressFn {
  let last = 0;
  return (ev) => {
    const now = Date.now();
    if (ev.done || ev.warning || now - last >= ms) {
      last = now;
      fn(ev);
    }
  };
}
