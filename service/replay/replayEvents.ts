/**
 * Replays Stripe's own record of events (GET /v1/events, handled types only) through the same code as the
 * webhook, oldest first. Events fetched with our API key are authentic; the event table makes anything applied
 * already a duplicate, and an event recorded `unmatched` or `failed` is applied again. The cursor in the
 * database records how far the list has been applied, so a replay resumes where an interrupted one stopped.
 */
import type Stripe from 'stripe';
import { describeError, isDatabaseUnavailable, type Database } from '../db';
import { isEventRecorded, recordFailedEvent } from '../webhook/eventLog';
import { HANDLED_EVENT_TYPES } from '../webhook/handledEventTypes';
import { processEvent, type EventContext, type EventResult } from '../webhook/processEvent';
import type { StripeEvent } from '../webhook/stripeEvent';
import { advanceReplayCursor, readReplayCursor, type ReplayCursor } from './cursor';
import { defaultBackoff, withRateLimitBackoff, type BackoffOptions } from './rateLimitBackoff';

export type ReplayOutcome = EventResult['status'] | 'failed' | 'mode_mismatch';

/** Where a replay starts: the stored cursor (or `sinceSeconds` when there is none yet), or a given time. */
export type ReplayStart = { kind: 'cursor'; sinceSecondsWithoutCursor: number } | { kind: 'since'; sinceSeconds: number };

export interface ReplayOptions {
  db: Database;
  stripe: Stripe;
  eventContext: EventContext;
  stripeMode: 'test' | 'live';
  start: ReplayStart;
  /** List only: nothing applied, the cursor untouched. */
  dryRun?: boolean;
  /** Unix seconds now; read once, when the replay starts. */
  nowSeconds?: () => number;
  backoff?: BackoffOptions;
  /** Stops between two events (shutdown); the cursor stays at the last one applied. */
  signal?: AbortSignal;
  /** A time window's events were listed, oldest first: these are applied next (unless a dry run). */
  onListed?: (events: readonly StripeEvent[], window: { fromSeconds: number; untilSeconds: number | undefined }) => void;
  /** `reason` says why an event failed (also kept in stripe_events.error) or was not applied. */
  onApplied?: (event: StripeEvent, outcome: ReplayOutcome, reason?: string) => void;
  /** After an event that changed a user's credits committed: tell the user's open balance streams. */
  onBalanceChanged?: (userId: string) => void;
}

export type ReplayCounts = Record<ReplayOutcome | 'listed', number>;

export interface ReplaySummary extends ReplayCounts {
  /** Unix seconds: the `created` the list started at. */
  fromSeconds: number;
  /** The stored cursor after the run (undefined: none yet, or a dry run that found none). */
  cursor: { createdSeconds: number; eventId: string } | undefined;
  /** Loud warnings for the operator (start older than 25 days, the cursor left behind). */
  warnings: string[];
  /** The run stopped early (signal) before it listed or applied everything. */
  interrupted: boolean;
}

/** Stripe lists events of the last 30 days; past 25, a replay is close to losing what it has not applied. */
export const stripeEventRetentionSeconds = 30 * 86_400;
export const cursorAgeWarningSeconds = 25 * 86_400;
/**
 * A replay from the cursor lists from this much before it: events of the cursor's second listed after it was
 * stored, or shown by Stripe's list a moment late, are not skipped. They apply as duplicates when seen before.
 */
export const cursorOverlapSeconds = 60;
/** Events are listed one time window at a time, so memory holds one window's events, not thirty days'. */
export const listWindowSeconds = 86_400;
const pageSize = 100;

export function emptyCounts(): ReplayCounts {
  return { listed: 0, processed: 0, duplicate: 0, ignored: 0, unmatched: 0, failed: 0, mode_mismatch: 0 };
}

/** Replays the handled events created since the start, oldest first; see the module comment. */
export async function replayEvents(options: ReplayOptions): Promise<ReplaySummary> {
  const startedAtSeconds = (options.nowSeconds ?? (() => Math.floor(Date.now() / 1000)))();
  const livemode = options.stripeMode === 'live';
  const stored = await readReplayCursor(options.db, livemode);
  const fromSeconds = startSeconds(options.start, stored);
  const warnings = startWarnings(options.start, stored, fromSeconds, startedAtSeconds);
  // A replay from a later time than the cursor leaves a gap behind it: it must not move the cursor past it.
  const movesCursor = !options.dryRun && (!stored || fromSeconds <= stored.createdSeconds);
  if (!options.dryRun && !movesCursor && stored) {
    warnings.push(
      `The cursor stays at ${isoTime(stored.createdSeconds)} (${stored.eventId}): this run starts later, so events between them were not replayed. Run without --since to replay from the cursor.`,
    );
  }
  const summary: ReplaySummary = { ...emptyCounts(), fromSeconds, cursor: stored && { createdSeconds: stored.createdSeconds, eventId: stored.eventId }, warnings, interrupted: false };
  // Set at the first event that failed: the cursor stays before it, so the next replay tries it again.
  let blocked = false;
  // The cursor is written after each event that changed something, and after a run of duplicates only at its
  // end: an interruption in the middle of duplicates leaves it behind them, and they are listed again.
  let unsaved: StripeEvent | undefined;
  const saveCursor = async () => {
    if (!unsaved) return;
    await advanceReplayCursor(options.db, livemode, unsaved);
    summary.cursor = { createdSeconds: unsaved.created, eventId: unsaved.id };
    unsaved = undefined;
  };
  const interrupted = async () => {
    await saveCursor();
    return { ...summary, interrupted: true };
  };

  for (let windowStart = fromSeconds; ; windowStart += listWindowSeconds) {
    if (options.signal?.aborted) return interrupted();
    // The last window is open-ended: it also lists what Stripe created while this replay ran.
    const windowEnd = windowStart + listWindowSeconds >= startedAtSeconds ? undefined : windowStart + listWindowSeconds;
    const events = await listWindow(options, windowStart, windowEnd);
    summary.listed += events.length;
    options.onListed?.(events, { fromSeconds: windowStart, untilSeconds: windowEnd });
    if (!options.dryRun) {
      for (const event of events) {
        if (options.signal?.aborted) return interrupted();
        const { outcome, reason } = await applyEvent(options, event);
        summary[outcome]++;
        options.onApplied?.(event, outcome, reason);
        blocked ||= outcome === 'failed';
        if (movesCursor && !blocked) {
          unsaved = event;
          if (outcome !== 'duplicate') await saveCursor();
        }
      }
      await saveCursor();
    }
    if (windowEnd === undefined) return summary;
  }
}

/** Fetches one event by id (`--event evt_…`) and applies it as a replay does; the cursor does not move. */
export async function replayOneEvent(options: Omit<ReplayOptions, 'start' | 'signal' | 'onListed'>, eventId: string): Promise<{ event: StripeEvent; outcome?: ReplayOutcome; reason?: string }> {
  const event = (await withRateLimitBackoff(() => options.stripe.events.retrieve(eventId), options.backoff ?? defaultBackoff)) as unknown as StripeEvent;
  if (options.dryRun) return { event };
  const applied = await applyEvent(options, event);
  options.onApplied?.(event, applied.outcome, applied.reason);
  return { event, ...applied };
}

function startSeconds(start: ReplayStart, stored: ReplayCursor | undefined): number {
  if (start.kind === 'since') return start.sinceSeconds;
  return stored ? stored.createdSeconds - cursorOverlapSeconds : start.sinceSecondsWithoutCursor;
}

function startWarnings(start: ReplayStart, stored: ReplayCursor | undefined, fromSeconds: number, nowSeconds: number): string[] {
  const ageSeconds = nowSeconds - fromSeconds;
  if (ageSeconds <= cursorAgeWarningSeconds) return [];
  const what = start.kind === 'cursor' && stored ? `The replay cursor (${stored.eventId}, ${isoTime(stored.createdSeconds)})` : `The start (${isoTime(fromSeconds)})`;
  const days = Math.floor(ageSeconds / 86_400);
  if (ageSeconds > stripeEventRetentionSeconds) {
    return [`${what} is ${days} days old: Stripe lists events of the last 30 days only, so events older than that cannot be replayed any more. Check them with the Stripe Dashboard, then replay what is left.`];
  }
  return [`${what} is ${days} days old: Stripe lists events of the last 30 days only. Replay now (and keep the periodic replay or this script running) before the oldest events can no longer be listed.`];
}

/** One time window's handled events, oldest first (Stripe lists newest first, same-second events in its own order). */
async function listWindow(options: ReplayOptions, fromSeconds: number, untilSeconds: number | undefined): Promise<StripeEvent[]> {
  const newestFirst: StripeEvent[] = [];
  const created = untilSeconds === undefined ? { gte: fromSeconds } : { gte: fromSeconds, lt: untilSeconds };
  for (let startingAfter: string | undefined; ; ) {
    const params = { types: [...HANDLED_EVENT_TYPES], created, limit: pageSize, ...(startingAfter ? { starting_after: startingAfter } : {}) };
    const page = await withRateLimitBackoff(() => options.stripe.events.list(params), options.backoff ?? defaultBackoff);
    newestFirst.push(...(page.data as unknown as StripeEvent[]));
    if (!page.has_more || page.data.length === 0) return newestFirst.reverse();
    startingAfter = page.data.at(-1)!.id;
  }
}

async function applyEvent(options: Omit<ReplayOptions, 'start'>, event: StripeEvent): Promise<{ outcome: ReplayOutcome; reason?: string }> {
  if (event.livemode !== (options.stripeMode === 'live')) {
    return { outcome: 'mode_mismatch', reason: `livemode=${event.livemode} but STRIPE_MODE=${options.stripeMode}` };
  }
  try {
    // Most of what a replay lists was applied already: one read instead of a transaction (processEvent's
    // claim would find the same, and still decides should a delivery of the event race this replay).
    if (await isEventRecorded(options.db, event.id)) return { outcome: 'duplicate' };
    const result = await processEvent(options.db, event, options.eventContext);
    // An unmatched subscription event can still change a user's credits.
    if ((result.status === 'processed' || result.status === 'unmatched') && result.userId) options.onBalanceChanged?.(result.userId);
    return result.status === 'unmatched' || result.status === 'ignored' ? { outcome: result.status, reason: result.reason } : { outcome: result.status };
  } catch (error) {
    // Without the database nothing can be applied or recorded: the whole replay stops (and says so).
    if (isDatabaseUnavailable(error)) throw error;
    // As the webhook route does: the reason stays where operators look for it.
    const reason = describeError(error).message;
    await recordFailedEvent(options.db, event, reason).catch(() => undefined);
    return { outcome: 'failed', reason };
  }
}

function isoTime(seconds: number): string {
  return new Date(seconds * 1000).toISOString();
}
