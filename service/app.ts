import Router from '@koa/router';
import Koa from 'koa';
import { describeError, type Database } from './db';
import type { Logger } from './logger';
import { createMetrics, type Metrics } from './metrics';
import { BalanceNotifier } from './users/balanceNotifier';
import { userRoutes } from './users/routes';
import type { EventContext } from './webhook/processEvent';
import { stripeWebhookHandler, webhookPath } from './webhook/route';
import type { SecretStore } from './webhook/secretStore';

export interface AppDeps {
  db: Database;
  secrets: SecretStore;
  logger: Logger;
  eventContext: EventContext;
  stripeMode: 'test' | 'live';
  maxBodyBytes: number;
  /** HS256 key for user sessions; without it the user routes are not mounted. */
  jwtSecret?: string;
  metrics?: Metrics;
  notifier?: BalanceNotifier;
  nowMillis?: () => number;
  heartbeatMillis?: number;
  shutdownSignal?: AbortSignal;
}

export interface App {
  koa: Koa;
  metrics: Metrics;
  notifier: BalanceNotifier;
  callback: ReturnType<Koa['callback']>;
}

/** Builds the HTTP application; never listens (see main.ts). */
export function createApp(deps: AppDeps): App {
  const metrics = deps.metrics ?? createMetrics();
  const notifier = deps.notifier ?? new BalanceNotifier();
  const { logger } = deps;
  const koa = new Koa({ proxy: true });

  koa.use(async (ctx, next) => {
    try {
      await next();
      if (ctx.status === 404 && ctx.body === undefined) ctx.throw(404, `No route for ${ctx.method} ${ctx.path}.`);
    } catch (error) {
      const status = httpStatusOf(error);
      ctx.status = status;
      ctx.body = { error: status >= 500 ? 'internal_error' : ((error as { reason?: string }).reason ?? 'request_error'), message: status >= 500 ? 'Internal error.' : (error as Error).message };
      if (status >= 500) ctx.app.emit('error', error, ctx);
    }
  });
  koa.on('error', (error: unknown, ctx?: Koa.Context) => {
    // A client that leaves mid-response (a closed balance stream, above all) is normal, not our fault.
    if (clientWentAway(error)) {
      logger.debug({ method: ctx?.method, path: ctx?.path }, 'client closed the connection before the response ended');
      return;
    }
    logger.error({ err: describeError(error), method: ctx?.method, path: ctx?.path }, 'unhandled request error');
  });

  const router = new Router();
  router.get('/healthz', (ctx) => {
    ctx.body = { status: 'ok' };
  });
  router.get('/readyz', async (ctx) => {
    const problems: string[] = [];
    await deps.db.ping().catch(() => problems.push('database unreachable'));
    if (deps.secrets.current().length === 0) problems.push('no webhook signing secret loaded');
    ctx.status = problems.length === 0 ? 200 : 503;
    ctx.body = { status: problems.length === 0 ? 'ready' : 'not_ready', problems };
  });
  router.get('/metrics', async (ctx) => {
    ctx.type = metrics.registry.contentType;
    ctx.body = await metrics.registry.metrics();
  });
  router.post(
    webhookPath,
    stripeWebhookHandler({
      db: deps.db,
      secrets: deps.secrets,
      logger,
      metrics,
      eventContext: deps.eventContext,
      stripeMode: deps.stripeMode,
      maxBodyBytes: deps.maxBodyBytes,
      nowMillis: deps.nowMillis ?? Date.now,
      onBalanceChanged: (userId) => notifier.notify(userId),
    }),
  );
  router.all(webhookPath, (ctx) => {
    ctx.set('Allow', 'POST');
    ctx.status = 405;
    ctx.body = { error: 'method_not_allowed', message: 'Stripe webhooks are delivered with POST only.' };
  });
  koa.use(router.routes());

  if (deps.jwtSecret) {
    const users = userRoutes({ db: deps.db, logger, jwtSecret: deps.jwtSecret, notifier, heartbeatMillis: deps.heartbeatMillis, shutdownSignal: deps.shutdownSignal });
    koa.use(users.routes());
    koa.use(users.allowedMethods());
  }

  return { koa, metrics, notifier, callback: koa.callback() };
}

function httpStatusOf(error: unknown): number {
  const status = (error as { status?: unknown } | undefined)?.status;
  return typeof status === 'number' && status >= 400 && status <= 599 ? status : 500;
}

/** Koa pipes a streamed body to the socket; when the client disconnects first, the pipe fails with one of these. */
const clientGoneCodes = new Set(['ERR_STREAM_PREMATURE_CLOSE', 'ECONNRESET', 'EPIPE']);

function clientWentAway(error: unknown): boolean {
  const code = (error as { code?: unknown } | undefined)?.code;
  return typeof code === 'string' && clientGoneCodes.has(code) && (error as { headerSent?: boolean }).headerSent === true;
}
