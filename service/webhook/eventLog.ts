import type { Database, PreparedStatement, Queryable } from '../db';
import type { StripeEvent } from './stripeEvent';

export type RecordedStatus = 'processed' | 'ignored' | 'unmatched' | 'failed';

// Inserting the event row is the idempotency check (credit_claim_event, migration 004): a concurrent copy of
// the same event waits on the primary key until the first commits, then finds it. A 'failed' row does not
// count as seen, and neither does an 'unmatched' one: what could not be applied (no user yet, a price missing
// from the catalog) is applied when the event comes again, after the cause is fixed; the rules' own keys still
// make every grant happen once. The lock key optionally serialises transactions about the same Stripe object
// (see the handlers) before anything is read, so each one sees what the other committed.

const claimStatement: PreparedStatement = { name: 'credit_claim_event', text: 'SELECT credit_claim_event($1, $2, $3, $4, $5, $6) AS claimed' };

/** Records the event as seen; false when it was already applied (a duplicate delivery). */
export async function claimEvent(tx: Queryable, event: StripeEvent, status: 'processed' | 'ignored', lockKey?: string): Promise<boolean> {
  const { rows } = await tx.query<{ claimed: boolean }>(claimStatement, [
    event.id,
    event.type,
    event.livemode,
    event.created,
    status,
    lockKey ?? null,
  ]);
  return rows[0]!.claimed;
}

/** Whether the event was applied (or deliberately not) already; a 'failed' or 'unmatched' one was not. */
export async function isEventRecorded(db: Queryable, eventId: string): Promise<boolean> {
  const { rowCount } = await db.query("SELECT 1 FROM stripe_events WHERE id = $1 AND status NOT IN ('failed', 'unmatched')", [eventId]);
  return rowCount > 0;
}

/** What applying the event came to, when it was not a plain success (a note, or another status). */
export async function setEventOutcome(tx: Queryable, eventId: string, status: RecordedStatus, note: string | undefined): Promise<void> {
  await tx.query('SELECT credit_set_event_outcome($1, $2, $3)', [eventId, status, note ?? null]);
}

/** After a rollback: leaves a trace for operators; Stripe's retry (or replay-events) applies it later. */
export async function recordFailedEvent(db: Database, event: StripeEvent, message: string): Promise<void> {
  await db.query(
    `INSERT INTO stripe_events (id, type, livemode, created, status, error)
     VALUES ($1, $2, $3, to_timestamp($4), 'failed', $5)
     ON CONFLICT (id) DO UPDATE SET error = EXCLUDED.error WHERE stripe_events.status = 'failed'`,
    [event.id, event.type, event.livemode, event.created, message],
  );
}
