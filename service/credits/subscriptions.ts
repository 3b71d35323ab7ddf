import type { Queryable } from '../db';
import { endedSubscriptionStatuses, type Subscription } from '../stripe/subscription';
import { allowanceOf, metadataPriceCredits, priceUnits, unknownPriceReason } from './allowance';
import type { CreditCatalog } from './catalog';
import { readUserId, unmatched, type HandlerOutcome } from './outcome';
import type { ObjectSource } from './source';
import { settleSubscriptionCredits } from './subscriptionCredits';

/** A subscription's states, its invoices and the Checkout session that links it are serialised per subscription. */
export const subscriptionLockKey = (subscriptionId: string) => `subscription:${subscriptionId}`;

/** Where a status sits in a subscription's life; orders two states of the same second when Stripe cannot be asked. */
const lifecycleRank: Record<string, number> = { incomplete: 0, trialing: 1, active: 2, past_due: 3, unpaid: 4, paused: 4, incomplete_expired: 5, canceled: 5 };

const entitledStatuses = new Set(['active', 'trialing']);

// The newest state wins: the later `created` (one-second resolution), then a state read from the Stripe API
// (Stripe's own current view) over one from an event, then the later billing period, then the later lifecycle
// stage (incomplete < trialing < active < past_due < unpaid, paused < ended). Two states still equal (a plan
// switched twice in one second, without an API key to ask) are told apart by their own data, never by event
// id: Stripe's ids are random, so the stored plan would be a coin toss per delivery. The larger allowance wins
// (as the period's high-water mark does), then the other columns in a fixed order; the event id decides only
// between states equal in every column. Arrival order and event ids never matter. Whatever wins: `ended` stays
// true once seen, the owner and customer are kept once known, and every price's metadata credits are remembered.
const stateColumns = [
  'status',
  'price_id',
  'plan',
  'monthly_credits',
  'current_period_start',
  'current_period_end',
  'collection_paused',
  'lifecycle_rank',
  'event_created',
  'fetched_at',
  'event_id',
];
const ordering = (row: string) =>
  `${row}.event_created, COALESCE(${row}.fetched_at, '-infinity'), COALESCE(${row}.current_period_start, '-infinity'), ${row}.lifecycle_rank,
   COALESCE(${row}.monthly_credits, -1), ${row}.collection_paused, ${row}.status, COALESCE(${row}.price_id, ''), COALESCE(${row}.plan, ''),
   COALESCE(${row}.current_period_end, '-infinity'), ${row}.event_id`;
const isNewer = `(${ordering('s')}) < (${ordering('EXCLUDED')})`;
// `tied`: another event of the same second is stored, and Stripe's current state was not read yet.
const storeStateSql = `
  WITH stored AS (SELECT event_created, event_id, fetched_at FROM stripe_subscriptions WHERE id = $1)
  INSERT INTO stripe_subscriptions AS s (id, customer_id, user_id, subscription_created, ended, price_credits, ${stateColumns.join(', ')})
  VALUES ($1, $2, $3, to_timestamp($4), $5, $6::jsonb, $7, $8, $9, $10, to_timestamp($11), to_timestamp($12), $13, $14,
          to_timestamp($15), to_timestamp($16::double precision / 1000), $17)
  ON CONFLICT (id) DO UPDATE SET
    customer_id = COALESCE(s.customer_id, EXCLUDED.customer_id),
    user_id = COALESCE(s.user_id, EXCLUDED.user_id),
    subscription_created = COALESCE(s.subscription_created, EXCLUDED.subscription_created),
    ended = s.ended OR EXCLUDED.ended,
    price_credits = s.price_credits || EXCLUDED.price_credits,
    ${stateColumns.map((column) => `${column} = CASE WHEN ${isNewer} THEN EXCLUDED.${column} ELSE s.${column} END`).join(',\n    ')},
    updated_at = now()
  RETURNING s.user_id AS "userId", s.customer_id AS "customerId",
    EXISTS (SELECT 1 FROM stored WHERE stored.event_created = to_timestamp($15) AND stored.event_id <> $17 AND stored.fetched_at IS NULL) AS tied`;

// A period's plan allowance is the largest of any active or trialing state seen in it, in whatever order.
const recordPeriodSql = `
  INSERT INTO subscription_periods (subscription_id, period_start, period_end, plan_allowance)
  VALUES ($1, to_timestamp($2), to_timestamp($3), $4)
  ON CONFLICT (subscription_id, period_start) DO UPDATE SET
    period_end = GREATEST(subscription_periods.period_end, EXCLUDED.period_end),
    plan_allowance = GREATEST(subscription_periods.plan_allowance, EXCLUDED.plan_allowance)`;

export interface RecordedSubscriptionState {
  outcome: HandlerOutcome;
  /** Another event of the same second is stored: only Stripe's current state (read from the API) can decide. */
  tied: boolean;
}

/**
 * A subscription's state (customer.subscription.created / updated / deleted, or read from the Stripe API):
 * stored if it is the newest, its period's plan allowance raised if it is active or trialing, and the owner's
 * subscription credits settled. `deleted` marks the state of a customer.subscription.deleted event.
 */
export async function recordSubscriptionState(
  tx: Queryable,
  subscription: Subscription,
  source: ObjectSource,
  catalog: CreditCatalog,
  options: { deleted?: boolean } = {},
): Promise<RecordedSubscriptionState> {
  const ended = options.deleted === true || endedSubscriptionStatuses.has(subscription.status);
  const status = ended && !endedSubscriptionStatuses.has(subscription.status) ? 'canceled' : subscription.status;
  const units = subscription.items.map((item) => priceUnits(item.price, item.quantity));
  const allowance = allowanceOf(units, catalog, {});
  const monthlyCredits = allowance.unknownPrices.length > 0 ? null : allowance.credits;
  const main = subscription.items.find((item) => catalog.plan(item.price.id)) ?? subscription.items[0];
  const plan = main ? (catalog.plan(main.price.id)?.name ?? main.price.nickname ?? main.price.id) : null;
  const { rows } = await tx.query<{ userId: string | null; customerId: string | null; tied: boolean }>(storeStateSql, [
    subscription.id,
    subscription.customerId ?? null,
    readUserId(subscription.metadata.user_id) ?? null,
    subscription.createdSeconds ?? null,
    ended,
    JSON.stringify(metadataPriceCredits(units)),
    status,
    main?.price.id ?? null,
    plan,
    monthlyCredits,
    subscription.period?.start ?? null,
    subscription.period?.end ?? null,
    subscription.collectionPaused,
    Object.hasOwn(lifecycleRank, status) ? lifecycleRank[status] : 0,
    source.asOfSeconds,
    source.readAtMillis ?? null,
    source.eventId ?? '',
  ]);
  const stored = rows[0]!;
  const tied = stored.tied && source.readAtMillis === undefined;

  const entitled = entitledStatuses.has(status) && !ended && !subscription.collectionPaused;
  if (subscription.period) {
    await tx.query(recordPeriodSql, [subscription.id, subscription.period.start, subscription.period.end, entitled ? monthlyCredits : null]);
  }

  const userId = stored.userId ?? (await ownerByCustomer(tx, subscription.id, stored.customerId));
  if (!userId) return { tied, outcome: unmatched('subscription has no known user yet; its state is kept and applied when its Checkout session arrives') };
  const outcome = await settleSubscriptionCredits(tx, userId, source, catalog);
  if (allowance.unknownPrices.length > 0) return { tied, outcome: unmatched(unknownPriceReason(allowance.unknownPrices), userId) };
  return { tied, outcome };
}

// Remembers a subscription's owner (and customer) whether or not Stripe told us about the subscription yet: a
// placeholder state older than any real one is stored until it does.
const rememberOwnerSql = `
  INSERT INTO stripe_subscriptions AS s (id, customer_id, user_id, status, event_created, ended, event_id)
  VALUES ($1, $2, $3, 'incomplete', '-infinity', false, '')
  ON CONFLICT (id) DO UPDATE SET
    customer_id = COALESCE(s.customer_id, EXCLUDED.customer_id),
    user_id = COALESCE(s.user_id, EXCLUDED.user_id)
  RETURNING user_id AS "userId", customer_id AS "customerId", price_credits AS "priceCredits", event_id <> '' AS "stateKnown"`;

export interface KnownSubscription {
  userId: string | null;
  customerId: string | null;
  priceCredits: Record<string, number>;
  /** A state of the subscription itself (an event or an API read) arrived, with its prices' metadata. */
  stateKnown: boolean;
}

/** Records what is known of a subscription's owner and customer; returns the owner, if known by now. */
export async function rememberSubscription(
  tx: Queryable,
  subscriptionId: string,
  customerId: string | undefined,
  userId: string | undefined,
): Promise<KnownSubscription> {
  const { rows } = await tx.query<KnownSubscription>(rememberOwnerSql, [subscriptionId, customerId ?? null, userId ?? null]);
  const known = rows[0]!;
  return { ...known, userId: known.userId ?? (await ownerByCustomer(tx, subscriptionId, known.customerId)) };
}

/** A subscription without an owner of its own belongs to whoever another subscription of the same customer does. */
async function ownerByCustomer(tx: Queryable, subscriptionId: string, customerId: string | null): Promise<string | null> {
  if (!customerId) return null;
  const { rows } = await tx.query<{ userId: string }>(
    'SELECT user_id AS "userId" FROM stripe_subscriptions WHERE customer_id = $1 AND user_id IS NOT NULL LIMIT 1',
    [customerId],
  );
  const userId = rows[0]?.userId;
  if (!userId) return null;
  await tx.query('UPDATE stripe_subscriptions SET user_id = $2 WHERE id = $1 AND user_id IS NULL', [subscriptionId, userId]);
  return userId;
}

export interface SubscriptionLink {
  userId: string;
  subscriptionId: string;
  customerId: string | undefined;
}

/** A subscription Checkout session: the subscription (and customer) belong to this user from now on. */
export async function linkSubscriptionToUser(tx: Queryable, link: SubscriptionLink, source: ObjectSource, catalog: CreditCatalog): Promise<HandlerOutcome> {
  const known = await rememberSubscription(tx, link.subscriptionId, link.customerId, link.userId);
  if (known.userId !== link.userId) return unmatched('subscription is already linked to another user', link.userId);
  return settleSubscriptionCredits(tx, link.userId, source, catalog);
}
