import type Router from '@koa/router';
import { PassThrough } from 'node:stream';
import { readBalance } from '../credits/balance';
import type { Database } from '../db';
import type { Logger } from '../logger';
import { createRouter } from '../router';
import { userAuthenticator } from './auth';
import type { BalanceNotifier } from './balanceNotifier';

export interface UserRouteDeps {
  db: Database;
  logger: Logger;
  jwtSecret: string;
  notifier: BalanceNotifier;
  /** A comment line this often keeps proxies from closing an idle stream. */
  heartbeatMillis?: number;
  /** Aborted at shutdown: open streams end so the server can close (clients reconnect to another replica). */
  shutdownSignal?: AbortSignal;
}

const defaultHeartbeatMillis = 15_000;
const creditsPath = '/api/v1/billing/credits';

/** The signed-in user's own credits, as JSON and as a live Server-Sent Events stream. */
export function userRoutes(deps: UserRouteDeps): Router {
  const authenticate = userAuthenticator(deps.jwtSecret);
  const router = createRouter();

  router.get(creditsPath, async (ctx) => {
    const { userId } = await authenticate(ctx);
    ctx.set('Cache-Control', 'no-store');
    ctx.body = await readBalance(deps.db, userId);
  });

  router.get(`${creditsPath}/stream`, async (ctx) => {
    const { userId, expiresAtMillis } = await authenticate(ctx, { allowQueryToken: true });
    const stream = new PassThrough();
    let lastSent = '';
    let sending = Promise.resolve();

    const sendBalance = () => {
      sending = sending.then(async () => {
        try {
          const balance = JSON.stringify(await readBalance(deps.db, userId));
          if (balance !== lastSent) {
            lastSent = balance;
            stream.write(`event: balance\ndata: ${balance}\n\n`);
          }
        } catch (error) {
          deps.logger.warn({ userId, reason: (error as Error).message }, 'could not read balance for stream; will retry on the next change');
        }
      });
    };

    const unsubscribe = deps.notifier.subscribe(userId, sendBalance);
    const heartbeat = setInterval(() => stream.write(': keep-alive\n\n'), deps.heartbeatMillis ?? defaultHeartbeatMillis);
    // The stream lives no longer than the session that opened it; the client reconnects with a fresh token.
    const expiry = expiresAtMillis === undefined ? undefined : setTimeout(() => close(), Math.max(0, expiresAtMillis - Date.now()));
    const close = () => {
      clearInterval(heartbeat);
      clearTimeout(expiry);
      unsubscribe();
      deps.shutdownSignal?.removeEventListener('abort', close);
      stream.end();
    };
    ctx.req.on('close', close);
    deps.shutdownSignal?.addEventListener('abort', close, { once: true });
    stream.on('error', close);

    ctx.req.socket.setTimeout(0);
    ctx.set({ 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache, no-transform', Connection: 'keep-alive', 'X-Accel-Buffering': 'no' });
    ctx.status = 200;
    ctx.body = stream;
    stream.write('retry: 3000\n\n');
    sendBalance();
  });

  return router;
}
