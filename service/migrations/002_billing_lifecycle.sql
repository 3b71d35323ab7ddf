-- Credits follow Stripe's billing lifecycle: paid invoices earn subscription credits (one high-water allowance
-- per billing period), a user may hold several subscriptions, refunds are tracked one by one, disputes take
-- credits back. Every lookup of the crediting transaction is on an index. See service/credits/.

-- Every subscription of a user, not only the one that counts (a replacement may start while the old one is
-- unpaid). The stored state is the newest one; see subscriptions.ts for the order of states.
ALTER TABLE stripe_subscriptions
  ADD COLUMN subscription_created timestamptz,                -- Stripe's `created`: the newest paid one counts
  ADD COLUMN collection_paused    boolean NOT NULL DEFAULT false,
  ADD COLUMN lifecycle_rank       smallint NOT NULL DEFAULT 0, -- orders two states of the same second
  ADD COLUMN fetched_at           timestamptz,                -- set when the state was read from the Stripe API
  ADD COLUMN price_credits        jsonb NOT NULL DEFAULT '{}'; -- monthly credits per unit of each price seen on it
CREATE INDEX stripe_subscriptions_user_idx ON stripe_subscriptions (user_id);

-- The owner of a linked subscription now lives on the subscription itself.
UPDATE stripe_subscriptions s SET user_id = u.user_id
FROM service_subscriptions u WHERE u.stripe_subscription_id = s.id AND s.user_id IS NULL;

-- One row per billing period of a subscription. What was granted for a period only ever rises.
CREATE TABLE subscription_periods (
  subscription_id text NOT NULL,
  period_start    timestamptz NOT NULL,
  period_end      timestamptz NOT NULL,
  plan_allowance  bigint CHECK (plan_allowance >= 0),          -- largest allowance of an active or trialing state of the period
  granted         bigint NOT NULL DEFAULT 0 CHECK (granted >= 0),
  PRIMARY KEY (subscription_id, period_start)
);
INSERT INTO subscription_periods (subscription_id, period_start, period_end, granted)
SELECT u.stripe_subscription_id, u.credited_period_start, GREATEST(s.current_period_end, u.credited_period_start), u.credited_allowance
FROM service_subscriptions u JOIN stripe_subscriptions s ON s.id = u.stripe_subscription_id
WHERE u.credited_period_start IS NOT NULL;
ALTER TABLE service_subscriptions DROP COLUMN credited_allowance;

-- Paid subscription invoices, once each whichever path (webhook, API read, replay) brings them.
CREATE TABLE subscription_invoices (
  id                text PRIMARY KEY,
  subscription_id   text NOT NULL,
  -- Its subscription lines (credit lines for unused time left out): [{ "price", "quantity", "start", "creditsPerUnit" }].
  lines             jsonb NOT NULL,
  latest_line_start timestamptz NOT NULL,                    -- it pays for the period that holds this moment
  amount_paid       bigint NOT NULL,
  received_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX subscription_invoices_subscription_idx ON subscription_invoices (subscription_id, latest_line_start);

-- Which payment paid which invoice (basil invoices no longer name their payment intent).
CREATE TABLE invoice_payments (
  payment_intent text PRIMARY KEY,
  invoice_id     text NOT NULL
);

-- Every refund of a payment by its id; a failed or canceled refund gives the money, and the credits, back.
CREATE TABLE payment_refunds (
  id             text PRIMARY KEY,
  payment_intent text NOT NULL,
  charge_id      text,
  amount         bigint NOT NULL CHECK (amount >= 0),
  status         text NOT NULL,
  counted        boolean NOT NULL,                           -- false once failed or canceled, for good
  updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payment_refunds_payment_intent_idx ON payment_refunds (payment_intent);

-- charge.refunded's cumulative amount: the newest report counts (not the largest), and only while no refund
-- object of the payment is known.
ALTER TABLE charge_refunds ADD COLUMN reported_at timestamptz;
UPDATE charge_refunds SET reported_at = updated_at;
ALTER TABLE charge_refunds ALTER COLUMN reported_at SET NOT NULL;

-- Every dispute of a payment; the newest report of its status counts.
CREATE TABLE payment_disputes (
  id             text PRIMARY KEY,
  payment_intent text NOT NULL,
  charge_id      text,
  amount         bigint NOT NULL CHECK (amount >= 0),
  status         text NOT NULL,
  counted        boolean NOT NULL,                           -- the disputed money is (still) taken
  reported_at    timestamptz NOT NULL,
  stage          smallint NOT NULL,                          -- orders two reports of the same second
  updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payment_disputes_payment_intent_idx ON payment_disputes (payment_intent);

-- What a purchase gave back: credits_refunded for refunds, credits_disputed for disputes, never more than bought.
ALTER TABLE credit_purchases
  ADD COLUMN credits_disputed bigint NOT NULL DEFAULT 0 CHECK (credits_disputed >= 0),
  ADD COLUMN amount_disputed  bigint NOT NULL DEFAULT 0,
  ADD CONSTRAINT credit_purchases_taken_back_check CHECK (credits_refunded + credits_disputed <= credits);
