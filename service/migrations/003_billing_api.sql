-- The billing API: stream tickets, checkout sessions it opened, the sync rate limit and spending.

-- Single-use tickets for EventSource (which cannot send headers): only a hash of the ticket is kept,
-- so a database dump holds nothing that opens a stream. Any replica redeems a ticket made by another.
CREATE TABLE stream_tickets (
  ticket_hash        bytea PRIMARY KEY,
  user_id            text NOT NULL,
  session_expires_at timestamptz NOT NULL,  -- the stream it opens closes when the session expires
  expires_at         timestamptz NOT NULL   -- the ticket itself: 60 s after it was made
);
CREATE INDEX stream_tickets_expiry_idx ON stream_tickets (expires_at);

-- Checkout sessions opened through POST /api/v1/billing/checkout: the user's pending purchases until Stripe
-- completes or expires them, and what sync-payment asks Stripe about.
CREATE TABLE checkout_sessions (
  session_id text PRIMARY KEY,
  user_id    text NOT NULL,
  mode       text NOT NULL CHECK (mode IN ('payment', 'subscription')),
  price_id   text NOT NULL,
  credits    bigint NOT NULL CHECK (credits > 0),  -- of the package, or per month of the plan
  status     text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'complete', 'expired')),
  livemode   boolean NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL
);
CREATE INDEX checkout_sessions_user_idx ON checkout_sessions (user_id, created_at DESC);

-- sync-payment calls Stripe: at most one per user per interval, across all replicas.
CREATE TABLE billing_syncs (
  user_id      text PRIMARY KEY,
  last_sync_at timestamptz NOT NULL
);

-- Credits spent by the product: one row per idempotency key, holding the first answer, which a repeat gets.
CREATE TABLE credit_consumptions (
  idempotency_key   text PRIMARY KEY,
  user_id           text NOT NULL,
  amount            bigint NOT NULL CHECK (amount > 0),
  reason            text NOT NULL,
  http_status       integer NOT NULL,
  response          json NOT NULL,   -- json, not jsonb: a repeat gets the very bytes of the first answer
  created_at        timestamptz NOT NULL DEFAULT now()
);

-- The ledger page of one user, newest first.
CREATE INDEX credit_ledger_user_newest_idx ON credit_ledger (user_id, id DESC);
