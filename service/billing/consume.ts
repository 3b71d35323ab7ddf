import type { Database, Queryable } from '../db';

/** What the product asks to spend, validated (routes.ts). */
export interface SpendRequest {
  userId: string;
  amount: number;
  idempotencyKey: string;
  reason: string;
}

/** The answer to a spend: stored with its key, so that a repeat gets exactly the first answer. */
export interface SpendAnswer {
  httpStatus: 200 | 409;
  body: Record<string, unknown>;
  /** True when this is the stored answer of an earlier request with the same key. */
  replayed: boolean;
  /** Set when credits changed (for the balance notification after commit). */
  changedUserId?: string;
}

export class IdempotencyConflict extends Error {
  override name = 'IdempotencyConflict';
  constructor(readonly differences: string[]) {
    super(`This idempotency_key was first used with another ${differences.join(' and ')}; use a new key for a new spend.`);
  }
}

// Claiming the key first: a concurrent request with the same key waits here for the first to commit, then
// finds its row (and its answer) instead of spending again.
const claimSql = `
  INSERT INTO credit_consumptions (idempotency_key, user_id, amount, reason, http_status, response)
  VALUES ($1, $2, $3, $4, 0, 'null') ON CONFLICT (idempotency_key) DO NOTHING RETURNING idempotency_key`;

// One statement takes from the subscription bucket first, then from purchased credits, writes a ledger entry
// per bucket touched, and keeps each balance equal to the sum of its entries. The row lock (FOR UPDATE) makes
// concurrent spends of one user queue, so the balance can never be spent twice.
const spendSql = `
  WITH balance AS (
    SELECT user_id, credits_remaining AS subscription, purchased_credits_balance AS purchased
    FROM service_subscriptions WHERE user_id = $1 FOR UPDATE
  ), split AS (
    SELECT user_id, LEAST(GREATEST(subscription, 0), $2::bigint) AS from_subscription,
           $2::bigint - LEAST(GREATEST(subscription, 0), $2::bigint) AS from_purchased
    FROM balance WHERE purchased >= 0 AND GREATEST(subscription, 0) + purchased >= $2::bigint
  ), entries AS (
    INSERT INTO credit_ledger (user_id, bucket, delta, reason, source_id)
    SELECT user_id, 'subscription', -from_subscription, 'usage', $3 FROM split WHERE from_subscription > 0
    UNION ALL
    SELECT user_id, 'purchased', -from_purchased, 'usage', $3 FROM split WHERE from_purchased > 0
  )
  UPDATE service_subscriptions s
  SET credits_remaining = s.credits_remaining - split.from_subscription,
      purchased_credits_balance = s.purchased_credits_balance - split.from_purchased, updated_at = now()
  FROM split WHERE s.user_id = split.user_id
  RETURNING split.from_subscription AS "fromSubscription", split.from_purchased AS "fromPurchased",
            s.credits_remaining AS "creditsRemaining", s.purchased_credits_balance AS "purchasedCreditsBalance"`;

interface SpendRow {
  fromSubscription: number;
  fromPurchased: number;
  creditsRemaining: number;
  purchasedCreditsBalance: number;
}

/**
 * Spends credits for the product, in one transaction: the idempotency key is claimed, the credits taken
 * (subscription first, then purchased) or the spend refused for too low a balance (409), and the answer
 * stored with the key. The same key again returns the stored answer and spends nothing; with another
 * user, amount or reason it is a conflict.
 */
export async function spendCredits(db: Database, request: SpendRequest): Promise<SpendAnswer> {
  return db.withTransaction(async (tx) => {
    const claimed = await tx.query(claimSql, [request.idempotencyKey, request.userId, request.amount, request.reason]);
    if (claimed.rowCount === 0) return replay(tx, request);

    const { rows } = await tx.query<SpendRow>(spendSql, [request.userId, request.amount, request.idempotencyKey]);
    const spent = rows[0];
    const answer: SpendAnswer = spent
      ? {
          httpStatus: 200,
          replayed: false,
          changedUserId: request.userId,
          body: {
            idempotency_key: request.idempotencyKey,
            user_id: request.userId,
            amount: request.amount,
            reason: request.reason,
            from_subscription: spent.fromSubscription,
            from_purchased: spent.fromPurchased,
            credits_remaining: spent.creditsRemaining,
            purchased_credits_balance: spent.purchasedCreditsBalance,
            total_credits: spent.creditsRemaining + spent.purchasedCreditsBalance,
          },
        }
      : { httpStatus: 409, replayed: false, body: await refusal(tx, request) };
    await tx.query('UPDATE credit_consumptions SET http_status = $2, response = $3 WHERE idempotency_key = $1', [request.idempotencyKey, answer.httpStatus, JSON.stringify(answer.body)]);
    return answer;
  });
}

async function refusal(tx: Queryable, request: SpendRequest): Promise<Record<string, unknown>> {
  const { rows } = await tx.query<{ subscription: number; purchased: number }>(
    'SELECT credits_remaining AS subscription, purchased_credits_balance AS purchased FROM service_subscriptions WHERE user_id = $1',
    [request.userId],
  );
  const subscription = rows[0]?.subscription ?? 0;
  const purchased = rows[0]?.purchased ?? 0;
  const message =
    purchased < 0
      ? `The user owes ${-purchased} credits (a refund of credits already spent): nothing can be spent until they buy again.`
      : `The user has ${Math.max(subscription, 0) + purchased} credits; ${request.amount} cannot be spent.`;
  return {
    error: 'insufficient_credits',
    message,
    idempotency_key: request.idempotencyKey,
    user_id: request.userId,
    amount: request.amount,
    credits_remaining: subscription,
    purchased_credits_balance: purchased,
    total_credits: subscription + purchased,
  };
}

async function replay(tx: Queryable, request: SpendRequest): Promise<SpendAnswer> {
  const { rows } = await tx.query<{ userId: string; amount: number; reason: string; httpStatus: 200 | 409; response: Record<string, unknown> }>(
    `SELECT user_id AS "userId", amount, reason, http_status AS "httpStatus", response FROM credit_consumptions WHERE idempotency_key = $1`,
    [request.idempotencyKey],
  );
  const first = rows[0]!;
  const differences = [
    first.userId !== request.userId ? 'user_id' : undefined,
    first.amount !== request.amount ? 'amount' : undefined,
    first.reason !== request.reason ? 'reason' : undefined,
  ].filter((difference) => difference !== undefined);
  if (differences.length > 0) throw new IdempotencyConflict(differences);
  return { httpStatus: first.httpStatus, body: first.response, replayed: true };
}
