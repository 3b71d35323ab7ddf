-- Credits per user: two buckets, each equal to the sum of its ledger entries.
CREATE TABLE service_subscriptions (
  user_id                   text PRIMARY KEY,
  credits_remaining         bigint NOT NULL DEFAULT 0,  -- subscription bucket: reset each billing period
  purchased_credits_balance bigint NOT NULL DEFAULT 0,  -- purchased bucket: never expires
  stripe_customer_id        text,
  stripe_subscription_id    text UNIQUE,
  plan                      text,
  status                    text,
  current_period_start      timestamptz,
  current_period_end        timestamptz,
  credited_period_start     timestamptz,                -- the billing period whose allowance was granted
  credited_allowance        bigint NOT NULL DEFAULT 0,  -- the allowance granted for that period so far
  created_at                timestamptz NOT NULL DEFAULT now(),
  updated_at                timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX service_subscriptions_customer_idx ON service_subscriptions (stripe_customer_id);

-- One row per Checkout session that sells credits; the unique key makes a grant happen once.
CREATE TABLE credit_purchases (
  id                         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  user_id                    text NOT NULL,
  stripe_checkout_session_id text NOT NULL UNIQUE,
  payment_intent             text,
  credits                    bigint NOT NULL CHECK (credits > 0),
  credits_refunded           bigint NOT NULL DEFAULT 0 CHECK (credits_refunded >= 0 AND credits_refunded <= credits),
  amount_total               bigint,
  amount_refunded            bigint NOT NULL DEFAULT 0,
  currency                   text,
  livemode                   boolean NOT NULL,
  status                     text NOT NULL CHECK (status IN ('pending', 'paid', 'failed')),
  created_at                 timestamptz NOT NULL DEFAULT now(),
  paid_at                    timestamptz
);
CREATE INDEX credit_purchases_user_idx ON credit_purchases (user_id, created_at DESC);
CREATE INDEX credit_purchases_payment_intent_idx ON credit_purchases (payment_intent);

-- Every authentic event once. A 'failed' row does not count as seen, so Stripe's retry applies it.
CREATE TABLE stripe_events (
  id           text PRIMARY KEY,
  type         text NOT NULL,
  livemode     boolean NOT NULL,
  created      timestamptz NOT NULL,
  status       text NOT NULL CHECK (status IN ('processed', 'ignored', 'unmatched', 'failed')),
  received_at  timestamptz NOT NULL DEFAULT now(),
  processed_at timestamptz,
  error        text
);
CREATE INDEX stripe_events_status_idx ON stripe_events (status, received_at) WHERE status IN ('unmatched', 'failed');

-- Stripe's view of each subscription, newest event wins, whether or not its user is known yet.
CREATE TABLE stripe_subscriptions (
  id                   text PRIMARY KEY,
  customer_id          text,
  user_id              text,               -- from the subscription's metadata, when present
  status               text NOT NULL,
  price_id             text,
  plan                 text,
  monthly_credits      bigint,
  current_period_start timestamptz,
  current_period_end   timestamptz,
  -- Ordering key of the stored state: (event_created, ended, current_period_end, event_id); see subscriptions.ts.
  event_created        timestamptz NOT NULL,
  ended                boolean NOT NULL,
  event_id             text NOT NULL,
  updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stripe_subscriptions_customer_idx ON stripe_subscriptions (customer_id);

-- Cumulative refunds per payment, kept even when the purchase is not known yet (events arrive in any order).
CREATE TABLE charge_refunds (
  payment_intent  text PRIMARY KEY,
  charge_id       text NOT NULL,
  amount          bigint NOT NULL CHECK (amount > 0),
  amount_refunded bigint NOT NULL CHECK (amount_refunded >= 0),
  updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Append-only history of every balance change.
CREATE TABLE credit_ledger (
  id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  user_id         text NOT NULL,
  bucket          text NOT NULL CHECK (bucket IN ('purchased', 'subscription')),
  delta           bigint NOT NULL CHECK (delta <> 0),
  reason          text NOT NULL,
  stripe_event_id text,
  source_id       text,
  created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX credit_ledger_user_idx ON credit_ledger (user_id, bucket);

CREATE FUNCTION credit_ledger_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'credit_ledger is append-only: record a correcting entry instead of %', TG_OP;
END $$;
CREATE TRIGGER credit_ledger_append_only BEFORE UPDATE OR DELETE ON credit_ledger
  FOR EACH ROW EXECUTE FUNCTION credit_ledger_is_append_only();

-- Tells every replica's open balance streams that a user's balance changed (delivered on commit).
CREATE FUNCTION notify_credit_balance_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('credit_balance_changed', NEW.user_id);
  RETURN NULL;
END $$;
CREATE TRIGGER service_subscriptions_balance_changed
  AFTER INSERT OR UPDATE OF credits_remaining, purchased_credits_balance, plan, status ON service_subscriptions
  FOR EACH ROW EXECUTE FUNCTION notify_credit_balance_changed();
