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
  /** The object was read from the Stripe API: Stripe's current state, newer than any event of the same second. */
  fromApi: boolean;
}

export function eventSource(event: StripeEvent): ObjectSource {
  return { eventId: event.id, asOfSeconds: event.created, fromApi: false };
}
