import type { Queryable } from '../db';

export interface CreditBalance {
  userId: string;
  purchasedCredits: number;
  subscriptionCredits: number;
  totalCredits: number;
  plan: string | null;
  subscriptionStatus: string | null;
  currentPeriodEnd: string | null;
}

export async function readBalance(db: Queryable, userId: string): Promise<CreditBalance> {
  const { rows } = await db.query<{ purchased: number; subscription: number; plan: string | null; status: string | null; periodEnd: Date | null }>(
    `SELECT purchased_credits_balance AS purchased, credits_remaining AS subscription, plan, status, current_period_end AS "periodEnd"
     FROM service_subscriptions WHERE user_id = $1`,
    [userId],
  );
  const row = rows[0];
  const purchasedCredits = row?.purchased ?? 0;
  const subscriptionCredits = row?.subscription ?? 0;
  return {
    userId,
    purchasedCredits,
    subscriptionCredits,
    totalCredits: purchasedCredits + subscriptionCredits,
    plan: row?.plan ?? null,
    subscriptionStatus: row?.status ?? null,
    currentPeriodEnd: row?.periodEnd?.toISOString() ?? null,
  };
}
