import type Router from '@koa/router';
import type Koa from 'koa';
import type Stripe from 'stripe';
import type { LineItemsFetcher } from '../credits/checkout';
import type { CreditCatalog } from '../credits/catalog';
import type { Database } from '../db';
import { optionalText, readJsonObject, requiredText } from '../http/jsonBody';
import type { Logger } from '../logger';
import { createRouter } from '../router';
import { serviceTokenGuard } from '../serviceToken';
import { userAuthenticator } from '../users/auth';
import type { SessionVerifier } from '../users/sessionTokens';
import { activeSubscription, checkoutIdempotencyKey, findPurchase, openCheckoutSession, type CheckoutUrls } from './checkout';
import { IdempotencyConflict, spendCredits } from './consume';
import { readCreditsView } from './creditsView';
import { defaultLedgerPageSize, maxLedgerPageSize, readLedgerPage } from './ledger';
import { packagesReader } from './packages';
import { throwStripeFailure } from './stripeFailure';
import { defaultSyncIntervalSeconds, sessionOwner, syncPayments, takeSyncTurn } from './syncPayment';

export const billingPath = '/api/v1/billing';
const maxIdLength = 255;
const maxReasonLength = 200;
/** Stripe's own limit on idempotency keys; the product's keys must fit it too. */
const maxIdempotencyKeyLength = 255;

export interface BillingRouteDeps {
  db: Database;
  logger: Logger;
  catalog: CreditCatalog;
  /** Absent without a Stripe API key: checkout and sync answer 503 saying so. */
  stripe: Stripe | undefined;
  fetchLineItems: LineItemsFetcher | undefined;
  checkoutUrls: CheckoutUrls | undefined;
  /** Without it the user routes are not mounted. */
  verifySession: SessionVerifier | undefined;
  /** Without it the service-to-service routes are not mounted. */
  serviceApiToken: string | undefined;
  /** Tells open streams after a commit that changed credits (app.ts: the one place that does). */
  balanceChanged: (userId: string) => void;
  syncIntervalSeconds?: number;
}

/**
 * The billing API besides the balance and its stream (users/routes.ts): the catalog, Checkout, the sync of
 * payments Stripe made that no webhook told us about, the ledger, and spending for the product's back end.
 */
export function billingRoutes(deps: BillingRouteDeps): Router {
  const router = createRouter();
  const readPackages = packagesReader(deps.catalog, deps.stripe, deps.logger);

  router.get(`${billingPath}/packages`, async (ctx) => {
    ctx.set('Cache-Control', 'no-cache');
    ctx.body = await readPackages();
  });

  if (deps.verifySession) {
    const authenticate = userAuthenticator(deps.verifySession);

    router.post(`${billingPath}/checkout`, async (ctx) => {
      const { userId } = await authenticate(ctx);
      const body = await readJsonObject(ctx, ['package_id', 'plan_id']);
      const packageId = optionalText(ctx, body, 'package_id', maxIdLength);
      const planId = optionalText(ctx, body, 'plan_id', maxIdLength);
      if ((packageId === undefined) === (planId === undefined)) ctx.throw(400, 'Send exactly one of "package_id" or "plan_id" (GET /api/v1/billing/packages lists them).', { reason: 'invalid_body' });
      const [field, value] = packageId !== undefined ? ['package_id', packageId] : ['plan_id', planId];
      const purchase =
        findPurchase(deps.catalog, { packageId, planId }) ??
        ctx.throw(400, `Unknown ${field} "${value}": GET /api/v1/billing/packages lists what is for sale.`, { reason: packageId !== undefined ? 'unknown_package' : 'unknown_plan' });
      const clientKey = ctx.get('idempotency-key') || undefined;
      if (clientKey !== undefined && (clientKey.length > maxIdempotencyKeyLength || !/^[\x21-\x7e]+$/.test(clientKey))) {
        ctx.throw(400, `Idempotency-Key must be 1 to ${maxIdempotencyKeyLength} visible ASCII characters.`, { reason: 'invalid_idempotency_key' });
      }
      const stripe = requireStripe(ctx);
      const urls =
        deps.checkoutUrls ??
        ctx.throw(503, 'Checkout is not configured: set BILLING_SUCCESS_URL and BILLING_CANCEL_URL (where Stripe sends buyers back).', { reason: 'checkout_not_configured' });
      if (purchase.kind === 'plan') {
        const current = await activeSubscription(deps.db, userId);
        if (current) ctx.throw(409, `You already have a subscription${current.plan ? ` (${current.plan})` : ''}; it must end before another one starts.`, { reason: 'already_subscribed' });
      }
      try {
        const opened = await openCheckoutSession(deps.db, stripe, { userId, purchase, urls, idempotencyKey: checkoutIdempotencyKey(userId, clientKey) });
        deps.balanceChanged(userId); // a new pending purchase
        ctx.set('Cache-Control', 'no-store');
        ctx.status = 201;
        ctx.body = { url: opened.url, session_id: opened.sessionId };
      } catch (error) {
        if ((error as { type?: string }).type === 'StripeIdempotencyError') {
          ctx.throw(409, 'This Idempotency-Key was already used for another purchase; send a new key for a new purchase.', { reason: 'idempotency_key_reused' });
        }
        throwStripeFailure(ctx, deps.logger, error, 'to open a Checkout session');
      }
    });

    router.post(`${billingPath}/sync-payment`, async (ctx) => {
      const { userId } = await authenticate(ctx);
      const body = await readJsonObject(ctx, ['session_id']);
      const sessionId = optionalText(ctx, body, 'session_id', maxIdLength);
      const stripe = requireStripe(ctx);
      const waitSeconds = await takeSyncTurn(deps.db, userId, deps.syncIntervalSeconds ?? defaultSyncIntervalSeconds);
      if (waitSeconds > 0) {
        ctx.set('Retry-After', String(waitSeconds));
        ctx.throw(429, `Credits were synced a moment ago; try again in ${waitSeconds} s.`, { reason: 'rate_limited' });
      }
      try {
        let only: Stripe.Checkout.Session | undefined;
        if (sessionId !== undefined) {
          only = await stripe.checkout.sessions.retrieve(sessionId).catch((error: unknown) => {
            if ((error as { statusCode?: number }).statusCode === 404) return undefined;
            throw error;
          });
          // Another user's session answers exactly as a session that does not exist.
          if (!only || sessionOwner(only) !== userId) ctx.throw(404, `No Checkout session ${sessionId} of yours.`, { reason: 'unknown_session' });
        }
        const report = await syncPayments({ db: deps.db, stripe, catalog: deps.catalog, fetchLineItems: deps.fetchLineItems }, userId, only);
        if (report.changed) deps.balanceChanged(userId);
        ctx.set('Cache-Control', 'no-store');
        ctx.body = { ...(await readCreditsView(deps.db, userId)), synced: { sessions: report.sessions, subscription: report.subscription } };
      } catch (error) {
        if ((error as { status?: number }).status === 404) throw error;
        throwStripeFailure(ctx, deps.logger, error, 'to read payments');
      }
    });

    router.get(`${billingPath}/ledger`, async (ctx) => {
      const { userId } = await authenticate(ctx);
      const limit = wholeNumberQuery(ctx, 'limit', 1, maxLedgerPageSize) ?? defaultLedgerPageSize;
      const startingAfter = wholeNumberQuery(ctx, 'starting_after', 1, Number.MAX_SAFE_INTEGER);
      ctx.set('Cache-Control', 'no-store');
      ctx.body = await readLedgerPage(deps.db, userId, { limit, startingAfter });
    });
  }

  if (deps.serviceApiToken) {
    router.post(`${billingPath}/credits/consume`, serviceTokenGuard(deps.serviceApiToken), async (ctx) => {
      const body = await readJsonObject(ctx, ['user_id', 'amount', 'idempotency_key', 'reason']);
      const userId = requiredText(ctx, body, 'user_id', maxIdLength);
      const idempotencyKey = requiredText(ctx, body, 'idempotency_key', maxIdempotencyKeyLength);
      const reason = requiredText(ctx, body, 'reason', maxReasonLength);
      const amount = positiveWholeNumber(body.amount) ?? ctx.throw(400, `"amount" must be a positive whole number of credits, got ${JSON.stringify(body.amount) ?? 'nothing'}.`, { reason: 'invalid_amount' });
      try {
        const answer = await spendCredits(deps.db, { userId, amount, idempotencyKey, reason });
        if (answer.changedUserId) deps.balanceChanged(answer.changedUserId);
        if (answer.replayed) ctx.set('Idempotent-Replayed', 'true');
        ctx.status = answer.httpStatus;
        ctx.body = answer.body;
      } catch (error) {
        if (error instanceof IdempotencyConflict) ctx.throw(409, error.message, { reason: 'idempotency_key_reused' });
        throw error;
      }
    });
  }

  function requireStripe(ctx: Koa.Context): Stripe {
    return deps.stripe ?? ctx.throw(503, 'No Stripe API key is configured (STRIPE_API_KEY): Stripe cannot be asked.', { reason: 'stripe_not_configured' });
  }

  return router;
}

function positiveWholeNumber(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 1 ? value : undefined;
}

function wholeNumberQuery(ctx: Koa.Context, name: string, min: number, max: number): number | undefined {
  const raw = ctx.query[name];
  if (raw === undefined) return undefined;
  const value = typeof raw === 'string' && /^\d{1,16}$/.test(raw) ? Number(raw) : NaN;
  if (!Number.isSafeInteger(value) || value < min || value > max) ctx.throw(400, `"${name}" must be a whole number from ${min} to ${max}.`, { reason: 'invalid_query' });
  return value;
}
