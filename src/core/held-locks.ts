// Repository locks this process holds, so that an interrupt (SIGINT, SIGTERM: a cancelled
// Kanister phase, a pod being stopped) removes them before the process exits, as restic does.
// Left behind, a lock from another host stays in the way of exclusive operations (prune, check,
// key changes) for the 30 minutes it takes to count as stale. Kept free of imports: every command
// loads it.

/** Something that removes one lock file (idempotent). */
export interface HeldLock {
  release(): Promise<void>;
}

const held = new Set<HeldLock>();

export function holdLock(l: HeldLock): void {
  held.add(l);
}

export function dropLock(l: HeldLock): void {
  held.delete(l);
}

/** Releases every lock still held; failures are ignored (the lock then goes stale as after a crash). */
export async function releaseHeldLocks(): Promise<void> {
  const all = [...held];
  held.clear();
  await Promise.allSettled(all.map((l) => l.release()));
}
