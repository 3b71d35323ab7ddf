import type Stripe from 'stripe';
import { describeError, type Database } from './db';
import { recordFailedEvent } from './webhook/eventLog';
import { HANDLED_EVENT_TYPES } from './webhook/handledEventTypes';
import { processEvent, type EventContext, type EventResult } from './webhook/processEvent';
import type { StripeEvent } from './webhook/stripeEvent';

export type RecoveryOutcome = EventResult['status'] | 'failed' | 'mode_mismatch';

export interface RecoveryOptions {
  db: Database;
  stripe: Stripe;
  eventContext: EventContext;
  stripeMode: 'test' | 'live';
  /** Unix seconds; Stripe keeps events listable for 30 days. */
  sinceSeconds: number;
  dryRun?: boolean;
  onListed?: (count: number) => void;
  /** `reason` says why an event failed (also kept in stripe_events.error) or was not applied. */
  onApplied?: (event: StripeEvent, outcome: RecoveryOutcome, reason?: string) => void;
  /** After a commit that changed a user's credits (BalanceChanges.changed): open streams on every replica re-read. */
  onBalanceChanged?: (userId: string) => void;
}

export type RecoverySummary = Record<RecoveryOutcome | 'listed', number>;

/**
 * Replays Stripe's own record of what happened since `sinceSeconds` through the same code as the webhook,
 * oldest first. Events fetched with our API key are authentic; the event table makes a replay of anything
 * already applied a no-op, so this is safe to run at any time, as often as wanted.
 */
export async function recoverMissedEvents(options: RecoveryOptions): Promise<RecoverySummary> {
  const summary: RecoverySummary = { listed: 0, processed: 0, duplicate: 0, ignored: 0, unmatched: 0, failed: 0, mode_mismatch: 0 };
  const events: StripeEvent[] = [];
  for await (const event of options.stripe.events.list({
    types: [...HANDLED_EVENT_TYPES],
    created: { gte: options.sinceSeconds },
    limit: 100,
  })) {
    events.push(event as unknown as StripeEvent);
  }
  events.sort((a, b) => a.created - b.created || a.id.localeCompare(b.id));
  summary.listed = events.length;
  options.onListed?.(events.length);
  if (options.dryRun) return summary;

  for (const event of events) {
    let outcome: RecoveryOutcome;
    let reason: string | undefined;
    if (event.livemode !== (options.stripeMode === 'live')) {
      outcome = 'mode_mismatch';
    } else {
      try {
        const result = await processEvent(options.db, event, options.eventContext);
        outcome = result.status;
        if ((result.status === 'processed' || result.status === 'unmatched') && result.userId) options.onBalanceChanged?.(result.userId);
        if (result.status === 'unmatched' || result.status === 'ignored') reason = result.reason;
      } catch (error) {
        // As the webhook route does: the reason stays where operators look for it.
        outcome = 'failed';
        reason = describeError(error).message;
        await recordFailedEvent(options.db, event, reason).catch(() => undefined);
      }
    }
    summary[outcome]++;
    options.onApplied?.(event, outcome, reason);
  }
  return summary;
}
