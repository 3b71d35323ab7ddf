import type { Queryable } from '../db';
import type { StripeEvent } from '../stripe/event';

/**
 * How a Stripe object reached a rule: in an event, or read from the Stripe API (billing sync, or a tie of
 * event times). The ledger names the event; ordering uses the time the object was in that state.
 */
export interface ObjectSource {
  /** The event that brought the object or caused it to be read; absent for a read on its own. */
  eventId: string | undefined;
  /** When Stripe's object was in this state, Unix seconds: the event's `created`, or the time it was read. */
  asOfSeconds: number;
  /**
   * Set when the object was read from the Stripe API: when Stripe answered (Unix milliseconds). Stripe's state
   * then, newer than any event of the same second; of two reads, the later answer is the newer state, whichever
   * transaction commits first.
   */
  readAtMillis?: number;
}

export function eventSource(event: StripeEvent): ObjectSource {
  return { eventId: event.id, asOfSeconds: event.created };
}

/** An object Stripe's API answered with at `readAtMillis` (read on its own: no event names it). */
export function apiReadSource(readAtMillis: number, eventId?: string, asOfSeconds = Math.floor(readAtMillis / 1000)): ObjectSource {
  return { eventId, asOfSeconds, readAtMillis };
}

/**
 * Serialises transactions about one Stripe object (subscriptionLockKey, paymentLockKey) or one user, until the
 * transaction ends. claimEvent takes the object's lock for an event; a rule applied to an object read from the
 * API (billing sync) takes it with this first, so a webhook and a sync of the same object never miss each other.
 */
export async function takeLock(tx: Queryable, key: string): Promise<void> {
  await tx.query('SELECT pg_advisory_xact_lock(hashtext($1))', [key]);
}
