/**
 * The benchmark's traffic: real-shaped Stripe events in a fixed, seeded mix. Mostly new paid Checkout
 * sessions for many users, some exact duplicates of earlier deliveries, some subscription updates and
 * some full refunds of earlier purchases. The same generator feeds the HTTP load and the ceiling.
 */
import { charge, checkoutSession, stripeEvent, subscription } from '../../localStripe/objects';

export type ItemKind = 'new' | 'duplicate' | 'subscription' | 'refund';

export interface WorkItem {
  kind: ItemKind;
  /** Index of the item whose event this one repeats (duplicates) or refunds (refunds). */
  of?: number;
  event: { id: string; type: string };
  /** Set for new purchases. */
  userId?: string;
  credits?: number;
}

export interface WorkloadOptions {
  /** Keeps ids apart between runs on the same database. */
  prefix: string;
  count: number;
  users?: number;
  subscriptions?: number;
  seed?: number;
}

/** Share of each kind, in percent. */
export const mix: Record<ItemKind, number> = { new: 80, duplicate: 10, subscription: 5, refund: 5 };

const defaultUsers = 5_000;
const defaultSubscriptions = 200;
const monthSeconds = 30 * 24 * 3600;

/** A small fast PRNG (mulberry32): the same seed gives the same workload. */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

export function buildWorkload(options: WorkloadOptions): WorkItem[] {
  const next = random(options.seed ?? 1);
  const users = options.users ?? defaultUsers;
  const subscriptions = options.subscriptions ?? defaultSubscriptions;
  const items: WorkItem[] = [];
  const purchases: number[] = [];
  const refunded = new Set<number>();
  const subscriptionVersions = new Map<number, number>();
  const paymentIntents = new Map<number, string>();
  const now = Math.floor(Date.now() / 1000);

  const newPurchase = () => {
    const userId = `${options.prefix}_user_${Math.floor(next() * users)}`;
    const credits = 10 + Math.floor(next() * 990);
    const paymentIntent = `pi_${options.prefix}_${items.length}`;
    const session = checkoutSession({ id: `cs_test_${options.prefix}_${items.length}`, client_reference_id: userId, payment_intent: paymentIntent, metadata: { credits: String(credits) } });
    paymentIntents.set(items.length, paymentIntent);
    purchases.push(items.length);
    items.push({ kind: 'new', userId, credits, event: stripeEvent('checkout.session.completed', session, { id: `evt_${options.prefix}_${items.length}` }) });
  };

  while (items.length < options.count) {
    const roll = next() * 100;
    if (roll < mix.new || purchases.length < 50) {
      newPurchase();
    } else if (roll < mix.new + mix.duplicate) {
      // Stripe's retries and concurrent deliveries: one of the last 200 purchases again, byte for byte.
      const recent = purchases.slice(-200);
      const of = recent[Math.floor(next() * recent.length)]!;
      items.push({ kind: 'duplicate', of, event: items[of]!.event });
    } else if (roll < mix.new + mix.duplicate + mix.subscription) {
      // A renewal or plan change of one of a few hundred subscriptions: a newer state each time.
      const index = Math.floor(next() * subscriptions);
      const version = (subscriptionVersions.get(index) ?? 0) + 1;
      subscriptionVersions.set(index, version);
      const periodStart = now - monthSeconds + version * 60;
      const sub = subscription(
        { id: `sub_${options.prefix}_${index}`, customer: `cus_${options.prefix}_${index}`, metadata: { user_id: `${options.prefix}_subscriber_${index}` } },
        { priceId: `price_${options.prefix}_plan_${version % 3}`, monthlyCredits: 100 * (1 + (version % 3)), periodStart, periodEnd: periodStart + monthSeconds },
      );
      items.push({ kind: 'subscription', event: stripeEvent('customer.subscription.updated', sub, { id: `evt_${options.prefix}_${items.length}`, created: now + version }) });
    } else {
      // A full refund of a purchase made at least 50 deliveries earlier, each purchase at most once.
      const candidates = purchases.slice(0, -50).filter((index) => !refunded.has(index));
      if (candidates.length === 0) {
        newPurchase();
        continue;
      }
      const of = candidates[Math.floor(next() * candidates.length)]!;
      refunded.add(of);
      const refund = charge({ id: `ch_${options.prefix}_${of}`, payment_intent: paymentIntents.get(of)!, amount: 1000, amount_refunded: 1000, refunded: true });
      items.push({ kind: 'refund', of, event: stripeEvent('charge.refunded', refund, { id: `evt_${options.prefix}_${items.length}` }) });
    }
  }
  return items;
}
