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

export interface HeldEvent extends HeldAdvisoryLock {
  /** Removes the trigger that parks the event (call once the lock is released). */
  unhold(): Promise<void>;
}

/**
 * Parks whoever records the event `eventId` (the webhook, a replay) inside its statement: a trigger on
 * stripe_events waits on an advisory lock this test holds until `release` is called.
 */
export async function holdEventOnLock(db: Database, eventId: string, key: number): Promise<HeldEvent> {
  await db.query(`
    CREATE FUNCTION test_hold_event() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN IF NEW.id = '${eventId}' THEN PERFORM pg_advisory_xact_lock(${key}); END IF; RETURN NEW; END $$;
    CREATE TRIGGER test_hold_event BEFORE INSERT ON stripe_events FOR EACH ROW EXECUTE FUNCTION test_hold_event();`);
  const lock = holdAdvisoryLock(db, key);
  await lock.held;
  return { ...lock, unhold: async () => void (await db.query('DROP TRIGGER test_hold_event ON stripe_events; DROP FUNCTION test_hold_event()')) };
}
