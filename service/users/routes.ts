import type Router from '@koa/router';
import type Koa from 'koa';
import { readCreditsView } from '../billing/creditsView';
import type { Database } from '../db';
import type { Logger } from '../logger';
import { createRouter } from '../router';
import { userAuthenticator } from './auth';
import type { BalanceNotifier } from './balanceNotifier';
import { openBalanceStream } from './balanceStream';
import type { Session, SessionVerifier } from './sessionTokens';
import { createStreamTicket, redeemStreamTicket } from './streamTickets';

export interface UserRouteDeps {
  db: Database;
  logger: Logger;
  verifySession: SessionVerifier;
  notifier: BalanceNotifier;
  /** A comment line this often keeps proxies from closing an idle stream. */
  heartbeatMillis?: number;
  /** Aborted at shutdown: open streams end so the server can close (clients reconnect to another replica). */
  shutdownSignal?: AbortSignal;
}

export const creditsPath = '/api/v1/billing/credits';
const defaultHeartbeatMillis = 15_000;

/** The signed-in user's own credits: as JSON, as a live Server-Sent Events stream, and the stream's tickets. */
export function userRoutes(deps: UserRouteDeps): Router {
  const authenticate = userAuthenticator(deps.verifySession);
  const router = createRouter();

  router.get(creditsPath, async (ctx) => {
    const { userId } = await authenticate(ctx);
    ctx.set('Cache-Control', 'no-store');
    ctx.body = await readCreditsView(deps.db, userId);
  });

  // Browsers' EventSource cannot send headers: the page asks for a ticket with its session, then opens the
  // stream with `?ticket=`. A ticket is random, lives 60 s and opens one stream; the session token itself
  // never appears in a URL (nor in nginx's error log, which quotes request lines).
  router.post(`${creditsPath}/stream-ticket`, async (ctx) => {
    const session = await authenticate(ctx);
    const { ticket, expiresAt } = await createStreamTicket(deps.db, session);
    ctx.set('Cache-Control', 'no-store');
    ctx.status = 201;
    ctx.body = { ticket, expires_at: expiresAt.toISOString() };
  });

  router.get(`${creditsPath}/stream`, async (ctx) => {
    const session = await streamSession(ctx);
    openBalanceStream(ctx, session, {
      db: deps.db,
      logger: deps.logger,
      notifier: deps.notifier,
      heartbeatMillis: deps.heartbeatMillis ?? defaultHeartbeatMillis,
      shutdownSignal: deps.shutdownSignal,
    });
  });

  /** The stream's session: from the Authorization header (servers), else from a ticket (browsers). */
  async function streamSession(ctx: Koa.Context): Promise<Session> {
    if (ctx.get('authorization')) return authenticate(ctx);
    const ticket = typeof ctx.query.ticket === 'string' ? ctx.query.ticket : undefined;
    if (!ticket) {
      ctx.set('WWW-Authenticate', 'Bearer realm="billing"');
      return ctx.throw(401, 'Open the stream with "Authorization: Bearer <session token>", or with ?ticket= from POST /api/v1/billing/credits/stream-ticket.', {
        reason: 'unauthenticated',
      });
    }
    const session = await redeemStreamTicket(deps.db, ticket);
    if (session) return session;
    ctx.set('WWW-Authenticate', 'Bearer realm="billing", error="invalid_token"');
    return ctx.throw(401, 'Unknown, used or expired stream ticket: ask for a new one (POST /api/v1/billing/credits/stream-ticket).', { reason: 'invalid_ticket' });
  }

  return router;
}
