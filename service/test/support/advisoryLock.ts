import type { Database } from '../../db';

export interface HeldAdvisoryLock {
  /** Resolves once the lock is taken. */
  held: Promise<void>;
  release(): void;
  /** Resolves once the holding transaction has ended. */
  done: Promise<void>;
}

/**
 * Holds a transaction-level advisory lock on one connection until `release` is called: a test parks a
 * delivery or a replay on it (a trigger or the service takes the same key) to act while it waits.
 */
export function holdAdvisoryLock(db: Database, key: number): HeldAdvisoryLock {
  let release!: () => void;
  let held!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  const heldPromise = new Promise<void>((resolve) => (held = resolve));
  const done = db.withTransaction(async (tx) => {
    await tx.query('SELECT pg_advisory_xact_lock($1)', [key]);
    held();
    await released;
  });
  return { held: heldPromise, release, done };
}
