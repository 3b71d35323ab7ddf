/**
 * The service's opt-in periodic replay (STRIPE_REPLAY_INTERVAL_SECONDS): every interval, the replay of
 * replayEvents.ts from the stored cursor, so that a missed delivery heals by itself. Every replica runs the
 * timer; one at a time replays, holding a PostgreSQL advisory lock, and the others skip their turn. A failure
 * (Stripe or the database unreachable, the rate limit) is logged and the next turn tries again: it never stops
 * the service.
 */
import type Stripe from 'stripe';
import { describeError, type Database } from '../db';
import type { Logger } from '../logger';
import type { EventContext } from '../webhook/processEvent';
import { replayEvents } from './replayEvents';

/** Any fixed number, the same in every replica (the migrations use another). */
export const replayLockKey = 0x5717_4e91;
/** Without a cursor yet, the first replay looks this far back (as the script does). */
const lookbackWithoutCursorSeconds = 3 * 86_400;

export interface PeriodicReplayOptions {
  db: Database;
  stripe: Stripe;
  eventContext: EventContext;
  stripeMode: 'test' | 'live';
  intervalSeconds: number;
  logger: Logger;
  /** After an event that changed a user's credits committed. */
  onBalanceChanged?: (userId: string) => void;
}

export interface PeriodicReplay {
  /** No new turn starts; a replay under way stops after its current event. Resolves once it has. */
  stop(): Promise<void>;
}

export function startPeriodicReplay(options: PeriodicReplayOptions): PeriodicReplay {
  const { logger } = options;
  const stopping = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;

  const turn = async () => {
    const startedAtMillis = Date.now();
    try {
      const result = await options.db.withExclusiveLock(replayLockKey, () =>
        replayEvents({
          db: options.db,
          stripe: options.stripe,
          eventContext: options.eventContext,
          stripeMode: options.stripeMode,
          start: { kind: 'cursor', sinceSecondsWithoutCursor: Math.floor(Date.now() / 1000) - lookbackWithoutCursorSeconds },
          signal: stopping.signal,
          onBalanceChanged: options.onBalanceChanged,
          onApplied: (event, outcome, reason) => {
            if (outcome === 'processed') logger.info({ eventId: event.id, eventType: event.type }, '[Stripe Replay] Applied a missed event');
            else if (outcome !== 'duplicate') logger.warn({ eventId: event.id, eventType: event.type, outcome, reason }, `[Stripe Replay] Event ${outcome}`);
          },
        }),
      );
      if (!result.acquired) {
        logger.debug('periodic replay skipped: another replica is replaying');
        return;
      }
      const { warnings, cursor, fromSeconds, ...counts } = result.value;
      for (const warning of warnings) logger.error({ warning }, `periodic replay: ${warning}`);
      logger.info(
        { ...counts, from: new Date(fromSeconds * 1000).toISOString(), cursorEventId: cursor?.eventId, durationMillis: Date.now() - startedAtMillis },
        'periodic replay finished',
      );
    } catch (error) {
      logger.error({ err: describeError(error), nextInSeconds: options.intervalSeconds }, 'periodic replay failed; the next turn tries again');
    }
  };

  const schedule = () => {
    if (stopping.signal.aborted) return;
    timer = setTimeout(() => {
      running = turn().finally(() => {
        running = undefined;
        schedule();
      });
    }, options.intervalSeconds * 1000);
    // The server keeps the process alive; a pending turn must not delay its exit.
    timer.unref();
  };
  schedule();
  logger.info({ intervalSeconds: options.intervalSeconds }, 'periodic replay of Stripe events on');

  return {
    async stop() {
      stopping.abort();
      clearTimeout(timer);
      await running;
    },
  };
}
