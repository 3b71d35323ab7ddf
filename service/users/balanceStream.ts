import type Koa from 'koa';
import { PassThrough } from 'node:stream';
import { readCreditsView } from '../billing/creditsView';
import type { Database } from '../db';
import type { Logger } from '../logger';
import type { BalanceNotifier } from './balanceNotifier';
import type { Session } from './sessionTokens';

export interface BalanceStreamDeps {
  db: Database;
  logger: Logger;
  notifier: BalanceNotifier;
  /** A comment line this often keeps proxies from closing an idle stream. */
  heartbeatMillis: number;
  /** Aborted at shutdown: open streams end so the server can close (clients reconnect to another replica). */
  shutdownSignal?: AbortSignal;
}

/** EventSource waits this long before reconnecting (with a new ticket) after the stream ends. */
const reconnectMillis = 3_000;
/** The longest delay setTimeout holds (2^31 − 1 ms, 24.8 days); a longer one would fire at once. */
export const maxTimerDelayMillis = 2 ** 31 - 1;

/**
 * Calls `callback` at `atMillis` (ms since epoch), however far away: a long wait is cut into timer-sized
 * steps. Returns the function that cancels it.
 */
export function atTime(atMillis: number, callback: () => void, now: () => number = Date.now): () => void {
  let timer: NodeJS.Timeout;
  const schedule = () => {
    const remaining = atMillis - now();
    if (remaining <= 0) return callback();
    timer = setTimeout(schedule, Math.min(remaining, maxTimerDelayMillis));
  };
  schedule();
  return () => clearTimeout(timer);
}

/**
 * Server-Sent Events of one user's credits: the current view at once, then again after every change (from
 * this process or, through PostgreSQL NOTIFY, from any replica). It ends when the session that opened it
 * expires, at shutdown, or when the client leaves.
 */
export function openBalanceStream(ctx: Koa.Context, session: Session, deps: BalanceStreamDeps): void {
  const { userId } = session;
  const stream = new PassThrough();
  let lastSent = '';
  let sending = Promise.resolve();

  const sendBalance = () => {
    sending = sending.then(async () => {
      try {
        const view = JSON.stringify(await readCreditsView(deps.db, userId));
        if (view !== lastSent) {
          lastSent = view;
          stream.write(`event: balance\ndata: ${view}\n\n`);
        }
      } catch (error) {
        deps.logger.warn({ userId, reason: (error as Error).message }, 'could not read balance for stream; will retry on the next change');
      }
    });
  };

  const unsubscribe = deps.notifier.subscribe(userId, sendBalance);
  const heartbeat = setInterval(() => stream.write(': keep-alive\n\n'), deps.heartbeatMillis);
  let cancelExpiry: () => void = () => undefined;
  const close = () => {
    clearInterval(heartbeat);
    cancelExpiry();
    unsubscribe();
    deps.shutdownSignal?.removeEventListener('abort', close);
    stream.end();
  };
  // The stream lives no longer than the session that opened it; the client reconnects with a fresh ticket.
  cancelExpiry = atTime(session.expiresAtMillis, close);
  ctx.req.on('close', close);
  deps.shutdownSignal?.addEventListener('abort', close, { once: true });
  stream.on('error', close);

  ctx.req.socket.setTimeout(0);
  ctx.set({ 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache, no-transform', Connection: 'keep-alive', 'X-Accel-Buffering': 'no' });
  ctx.status = 200;
  ctx.body = stream;
  stream.write(`retry: ${reconnectMillis}\n\n`);
  sendBalance();
}
