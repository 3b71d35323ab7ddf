import Koa from 'koa';
import type Stripe from 'stripe';
import type { CheckoutUrls } from './billing/checkout';
import { billingPath, billingRoutes } from './billing/routes';
import { creditsPageRoutes } from './creditsPage/route';
import { describeError, type Database } from './db';
import { cors } from './http/cors';
import type { Logger } from './logger';
import { createMetrics, type Metrics } from './metrics';
import { createRouter } from './router';
import { BalanceChanges } from './users/balanceChanges';
import { BalanceNotifier } from './users/balanceNotifier';
import { userRoutes } from './users/routes';
import { sessionVerifier, type SessionTokenOptions } from './users/sessionTokens';
import type { EventContext } from './webhook/processEvent';
import { stripeWebhookHandler, webhookPath } from './webhook/route';
import type { SecretStore } from './webhook/secretStore';
import { SecretUsage } from './webhook/secretUsage';

export interface AppDeps {
  db: Database;
  secrets: SecretStore;
  logger: Logger;
  eventContext: EventContext;
  stripeMode: 'test' | 'live';
  maxBodyBytes: number;
  /** How user session tokens are checked; without it the user routes are not mounted. */
  sessionTokens?: SessionTokenOptions;
  /** Bearer token of the service-to-service routes; without it they are not mounted. */
  serviceApiToken?: string;
  /** The Stripe API (checkout, sync-payment, prices); without it those routes answer 503. */
  stripe?: Stripe;
  /** Where Stripe Checkout sends buyers back; without them checkout answers 503. */
  checkoutUrls?: CheckoutUrls;
  /** Origins whose pages may call the user routes (CORS). */
  corsAllowedOrigins?: readonly string[];
  /** Seconds between two syncs of one user (default 10). */
  syncIntervalSeconds?: number;
  metrics?: Metrics;
  notifier?: BalanceNotifier;
  /** Where writers report committed balance changes; made here (on `db`, around `notifier`) when absent. */
  balanceChanges?: BalanceChanges;
  nowMillis?: () => number;
  heartbeatMillis?: number;
  shutdownSignal?: AbortSignal;
}

export interface App {
  koa: Koa;
  metrics: Metrics;
  notifier: BalanceNotifier;
  /** Give it the channel's notifications (listenForBalanceChanges) and flush it before closing the database. */
  balanceChanges: BalanceChanges;
  callback: ReturnType<Koa['callback']>;
}

/** Builds the HTTP application; never listens (see main.ts). */
export function createApp(deps: AppDeps): App {
  const metrics = deps.metrics ?? createMetrics();
  const { logger } = deps;
  const balanceChanges = deps.balanceChanges ?? new BalanceChanges(deps.db, logger, deps.notifier ?? new BalanceNotifier());
  const notifier = balanceChanges.notifier;
  const koa = new Koa({ proxy: true });
  // Every writer of credits (webhook, sync, spending) reports here after its commit: this process's open
  // streams hear it at once, the other replicas within a batch (balanceChanges.ts).
  const balanceChanged = (userId: string) => balanceChanges.changed(userId);

  koa.use(async (ctx, next) => {
    try {
      await next();
      if (ctx.status === 404 && ctx.body === undefined) ctx.throw(404, `No route for ${ctx.method} ${ctx.path}.`);
    } catch (error) {
      const status = httpStatusOf(error);
      // A 5xx thrown on purpose with a reason (a dependency unavailable) says so; any other is a bug, told to nobody but the log.
      const reason = (error as { reason?: unknown }).reason;
      const deliberate = typeof reason === 'string' && status !== 500;
      ctx.status = status;
      ctx.body = status >= 500 && !deliberate ? { error: 'internal_error', message: 'Internal error.' } : { error: typeof reason === 'string' ? reason : 'request_error', message: (error as Error).message };
      if (status >= 500 && !deliberate) ctx.app.emit('error', error, ctx);
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

  const router = createRouter();
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
  // Fingerprints only, never secrets; like /metrics, on the service's port only (the edge does not route it).
  const secretUsage = new SecretUsage(deps.secrets, (deps.nowMillis ?? Date.now)());
  router.get('/webhook-secrets', (ctx) => {
    ctx.body = {
      counting_since: secretUsage.countingSince,
      fingerprints: secretUsage.snapshot().map((entry) => ({
        fingerprint: entry.fingerprint,
        loaded: entry.loaded,
        verified_deliveries: entry.verifiedDeliveries,
        last_verified_at: entry.lastVerifiedAt,
      })),
    };
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
      secretUsage,
      logger,
      metrics,
      eventContext: deps.eventContext,
      stripeMode: deps.stripeMode,
      maxBodyBytes: deps.maxBodyBytes,
      nowMillis: deps.nowMillis ?? Date.now,
      onBalanceChanged: balanceChanged,
    }),
  );
  router.all(webhookPath, (ctx) => {
    ctx.set('Allow', 'POST');
    ctx.status = 405;
    ctx.body = { error: 'method_not_allowed', message: 'Stripe webhooks are delivered with POST only.' };
  });
  koa.use(router.routes());

  // The product's pages (on another origin) call every billing route but the webhook and spending, which
  // only servers call.
  const isBrowserRoute = (path: string) => path.startsWith(`${billingPath}/`) && path !== webhookPath && path !== `${billingPath}/credits/consume`;
  koa.use(cors(deps.corsAllowedOrigins ?? [], isBrowserRoute));
  const verifySession = deps.sessionTokens ? sessionVerifier(deps.sessionTokens) : undefined;
  if (verifySession) {
    const users = userRoutes({ db: deps.db, logger, verifySession, notifier, heartbeatMillis: deps.heartbeatMillis, shutdownSignal: deps.shutdownSignal });
    koa.use(users.routes());
    koa.use(users.allowedMethods());
  }
  const billing = billingRoutes({
    db: deps.db,
    logger,
    catalog: deps.eventContext.catalog,
    stripe: deps.stripe,
    fetchLineItems: deps.eventContext.fetchLineItems,
    checkoutUrls: deps.checkoutUrls,
    verifySession,
    serviceApiToken: deps.serviceApiToken,
    balanceChanged,
    syncIntervalSeconds: deps.syncIntervalSeconds,
  });
  koa.use(billing.routes());
  koa.use(billing.allowedMethods());
  koa.use(creditsPageRoutes().routes());

  return { koa, metrics, notifier, balanceChanges, callback: koa.callback() };
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
