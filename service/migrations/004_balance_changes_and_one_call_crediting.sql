-- Live balance updates no longer NOTIFY inside crediting transactions: a notifying transaction's commit takes a
-- cluster-wide lock until it is flushed, which serialised every commit (README, "What bounds the ratio"). The
-- process that committed a change tells the other replicas itself, in batches (service/users/balanceChanges.ts).
DROP TRIGGER service_subscriptions_balance_changed ON service_subscriptions;
DROP FUNCTION notify_credit_balance_changed();

-- The hot paths in one round trip each: a new paid Checkout session, a duplicate of it, a refund. Each rule is
-- a function here, called by its TypeScript rule inside a transaction (a sync, an API read) and, for a webhook
-- event, by one event function that claims the event, applies the rule and records the outcome in a single
-- autocommit call (the statement is its own transaction). Every lookup is on an index (creditingQueryPlans test).

-- The event row is the idempotency check (see eventLog.ts): false when the event was applied already. The
-- optional lock serialises transactions about one Stripe object before anything is read. A duplicate of an
-- event committed earlier is found by a read first: it writes nothing, so its commit waits for no WAL flush.
-- (A copy still in flight elsewhere is not visible to that read; the insert then waits for it and finds it.)
CREATE FUNCTION credit_claim_event(p_id text, p_type text, p_livemode boolean, p_created bigint, p_status text, p_lock_key text)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM stripe_events WHERE id = p_id AND status NOT IN ('failed', 'unmatched')) THEN RETURN false; END IF;
  IF p_lock_key IS NOT NULL THEN PERFORM pg_advisory_xact_lock(hashtext(p_lock_key)); END IF;
  INSERT INTO stripe_events AS e (id, type, livemode, created, status, processed_at)
  VALUES (p_id, p_type, p_livemode, to_timestamp(p_created), p_status, now())
  ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, processed_at = now(), error = NULL
    WHERE e.status IN ('failed', 'unmatched');
  RETURN FOUND;
END $$;

-- What applying the event came to, when it was not a plain success.
CREATE FUNCTION credit_set_event_outcome(p_id text, p_status text, p_note text) RETURNS void LANGUAGE sql AS $$
  UPDATE stripe_events SET status = p_status, error = p_note WHERE id = p_id AND (p_status <> 'processed' OR p_note IS NOT NULL);
$$;

-- The ledger entry and the balance change together, so "balance = sum of ledger deltas" holds for every user
-- and bucket. A zero change records nothing.
CREATE FUNCTION credit_adjust(p_user_id text, p_bucket text, p_delta bigint, p_reason text, p_event_id text, p_source_id text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  IF p_delta = 0 THEN RETURN; END IF;
  INSERT INTO credit_ledger (user_id, bucket, delta, reason, stripe_event_id, source_id) VALUES (p_user_id, p_bucket, p_delta, p_reason, p_event_id, p_source_id);
  INSERT INTO service_subscriptions AS s (user_id, purchased_credits_balance, credits_remaining)
  VALUES (p_user_id, CASE WHEN p_bucket = 'purchased' THEN p_delta ELSE 0 END, CASE WHEN p_bucket = 'subscription' THEN p_delta ELSE 0 END)
  ON CONFLICT (user_id) DO UPDATE SET
    purchased_credits_balance = s.purchased_credits_balance + EXCLUDED.purchased_credits_balance,
    credits_remaining = s.credits_remaining + EXCLUDED.credits_remaining,
    updated_at = now();
END $$;

-- What a paid purchase gives back, recomputed from everything known about its payment, so each refund or
-- dispute event (in any order, any number of times) only moves the difference:
-- - refunded: the sum of its refunds not failed or canceled; while no refund object is known, the newest
--   cumulative amount charge.refunded reported;
-- - disputed: the sum of its disputes not closed in the merchant's favour;
-- - credits back = ⌊credits × share ÷ charged⌋, in exact integer arithmetic (numeric `div`), refunds first,
--   then disputes on what refunds left: together never more than the purchase.
-- If the credits were spent already, the purchased balance goes below zero (a debt the ledger shows). A payment
-- that bought no credits is told apart: a subscription invoice's (its credits stay) or one not known (yet),
-- which a later purchase applies (`unmatched`).
CREATE FUNCTION credit_settle_take_back(p_payment_intent text, p_event_id text, OUT result_status text, OUT result_user_id text, OUT result_note text)
LANGUAGE plpgsql AS $$
DECLARE
  change record;
  purchase_status text;
  invoice text;
BEGIN
  WITH purchase AS (
    SELECT id, credits, credits_refunded, credits_disputed, amount_total
    FROM credit_purchases WHERE payment_intent = p_payment_intent AND status = 'paid' FOR UPDATE
  ), charge AS (
    SELECT amount, amount_refunded FROM charge_refunds WHERE payment_intent = p_payment_intent
  ), refunds AS (
    SELECT count(*) AS known, COALESCE(sum(amount) FILTER (WHERE counted), 0) AS counted FROM payment_refunds WHERE payment_intent = p_payment_intent
  ), money AS (
    SELECT p.id,
      COALESCE(NULLIF(p.amount_total, 0), (SELECT amount FROM charge)) AS charged,
      CASE WHEN r.known > 0 THEN r.counted ELSE COALESCE((SELECT amount_refunded FROM charge), 0) END AS refunded,
      (SELECT COALESCE(sum(amount), 0) FROM payment_disputes WHERE payment_intent = p_payment_intent AND counted) AS disputed
    FROM purchase p, refunds r
  ), share AS (
    SELECT id, charged, LEAST(refunded, charged) AS refunded, LEAST(refunded + disputed, charged) AS taken FROM money WHERE charged > 0
  )
  UPDATE credit_purchases c SET
    credits_refunded = div(c.credits::numeric * s.refunded, s.charged),
    credits_disputed = div(c.credits::numeric * s.taken, s.charged) - div(c.credits::numeric * s.refunded, s.charged),
    amount_refunded = s.refunded,
    amount_disputed = s.taken - s.refunded
  FROM share s, purchase p
  WHERE c.id = s.id AND p.id = s.id
  RETURNING c.user_id, c.stripe_checkout_session_id AS session_id,
    c.credits_refunded - p.credits_refunded AS refunded_delta, c.credits_disputed - p.credits_disputed AS disputed_delta
  INTO change;
  IF FOUND THEN
    PERFORM credit_adjust(change.user_id, 'purchased', -change.refunded_delta, CASE WHEN change.refunded_delta > 0 THEN 'refund' ELSE 'refund_failed' END, p_event_id, change.session_id);
    PERFORM credit_adjust(change.user_id, 'purchased', -change.disputed_delta, CASE WHEN change.disputed_delta > 0 THEN 'dispute' ELSE 'dispute_won' END, p_event_id, change.session_id);
    result_status := 'processed';
    result_user_id := change.user_id;
    RETURN;
  END IF;
  SELECT status INTO purchase_status FROM credit_purchases WHERE payment_intent = p_payment_intent LIMIT 1;
  SELECT invoice_id INTO invoice FROM invoice_payments WHERE payment_intent = p_payment_intent;
  IF purchase_status = 'paid' THEN
    result_status := 'processed';
    result_note := 'the charge amount is unknown: nothing can be taken back in proportion';
  ELSIF invoice IS NOT NULL THEN
    result_status := 'processed';
    result_note := format('payment of subscription invoice %s: subscription credits are not taken back by refunds or disputes', invoice);
  ELSE
    result_status := 'unmatched';
    result_note := 'no paid credit purchase or subscription invoice for this payment yet; kept and applied if one arrives';
  END IF;
END $$;

-- A one-off Checkout session: inserts the purchase, or moves a pending one on. Credits are granted only when
-- this call made the purchase paid, so exactly once per session whichever of its events (or reads) arrives
-- first or twice. Refunds or disputes of its payment that arrived first apply now.
CREATE FUNCTION credit_record_purchase(
  p_user_id text, p_session_id text, p_payment_intent text, p_credits bigint, p_amount_total bigint, p_currency text,
  p_livemode boolean, p_status text, p_event_id text,
  OUT result_status text, OUT result_user_id text, OUT result_note text)
LANGUAGE plpgsql AS $$
DECLARE
  purchase record;
BEGIN
  INSERT INTO credit_purchases AS c (user_id, stripe_checkout_session_id, payment_intent, credits, amount_total, currency, livemode, status, paid_at)
  VALUES (p_user_id, p_session_id, p_payment_intent, p_credits, p_amount_total, p_currency, p_livemode, p_status, CASE WHEN p_status = 'paid' THEN now() END)
  ON CONFLICT (stripe_checkout_session_id) DO UPDATE
    SET status = EXCLUDED.status, paid_at = EXCLUDED.paid_at, payment_intent = COALESCE(c.payment_intent, EXCLUDED.payment_intent)
    WHERE c.status = 'pending' AND EXCLUDED.status <> 'pending'
  RETURNING c.user_id, c.status, c.credits, c.payment_intent,
    EXISTS (SELECT 1 FROM charge_refunds r WHERE r.payment_intent = c.payment_intent)
      OR EXISTS (SELECT 1 FROM payment_refunds r WHERE r.payment_intent = c.payment_intent)
      OR EXISTS (SELECT 1 FROM payment_disputes d WHERE d.payment_intent = c.payment_intent) AS reversed
  INTO purchase;
  result_status := 'processed';
  IF NOT FOUND THEN
    result_user_id := p_user_id;
    result_note := 'purchase already settled by an earlier event';
    RETURN;
  END IF;
  result_user_id := purchase.user_id;
  IF purchase.status <> 'paid' THEN
    result_note := 'purchase ' || purchase.status;
    RETURN;
  END IF;
  PERFORM credit_adjust(purchase.user_id, 'purchased', purchase.credits, 'credit_purchase', p_event_id, p_session_id);
  IF purchase.payment_intent IS NOT NULL AND purchase.reversed THEN PERFORM credit_settle_take_back(purchase.payment_intent, p_event_id); END IF;
END $$;

-- One row per refund. A failed or canceled refund never succeeds again, so `counted` only ever turns false,
-- whatever order its events (refund.created/updated/failed, charge.refund.updated) arrive in.
CREATE FUNCTION credit_store_refund(p_id text, p_payment_intent text, p_charge_id text, p_amount bigint, p_status text, p_counted boolean)
RETURNS void LANGUAGE sql AS $$
  INSERT INTO payment_refunds AS r (id, payment_intent, charge_id, amount, status, counted) VALUES (p_id, p_payment_intent, p_charge_id, p_amount, p_status, p_counted)
  ON CONFLICT (id) DO UPDATE SET
    status = CASE WHEN r.counted THEN EXCLUDED.status ELSE r.status END,
    counted = r.counted AND EXCLUDED.counted,
    charge_id = COALESCE(r.charge_id, EXCLUDED.charge_id),
    updated_at = now();
$$;

-- refund.created / refund.updated / refund.failed / charge.refund.updated: the refund is kept by its id, and the
-- purchase's credits follow the sum of its refunds that are not failed or canceled.
CREATE FUNCTION credit_record_refund(
  p_id text, p_payment_intent text, p_charge_id text, p_amount bigint, p_status text, p_counted boolean, p_event_id text,
  OUT result_status text, OUT result_user_id text, OUT result_note text)
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM credit_store_refund(p_id, p_payment_intent, p_charge_id, p_amount, p_status, p_counted);
  SELECT * INTO result_status, result_user_id, result_note FROM credit_settle_take_back(p_payment_intent, p_event_id);
END $$;

-- charge.refunded: the charge's amount and cumulative amount_refunded (the newest report counts: it goes down
-- when a refund fails), and the refunds older API versions embed ([{ id, amount, status, counted }]). The
-- cumulative amount decides only until refund objects of the payment are known.
CREATE FUNCTION credit_record_charge_refunded(
  p_payment_intent text, p_charge_id text, p_amount bigint, p_amount_refunded bigint, p_as_of_seconds bigint, p_refunds jsonb, p_event_id text,
  OUT result_status text, OUT result_user_id text, OUT result_note text)
LANGUAGE plpgsql AS $$
DECLARE
  refund record;
BEGIN
  INSERT INTO charge_refunds AS c (payment_intent, charge_id, amount, amount_refunded, reported_at)
  VALUES (p_payment_intent, p_charge_id, p_amount, p_amount_refunded, to_timestamp(p_as_of_seconds))
  ON CONFLICT (payment_intent) DO UPDATE SET
    amount = EXCLUDED.amount,
    amount_refunded = CASE WHEN EXCLUDED.reported_at >= c.reported_at THEN EXCLUDED.amount_refunded ELSE c.amount_refunded END,
    reported_at = GREATEST(c.reported_at, EXCLUDED.reported_at),
    updated_at = now();
  FOR refund IN SELECT * FROM jsonb_to_recordset(p_refunds) AS x(id text, amount bigint, status text, counted boolean) LOOP
    PERFORM credit_store_refund(refund.id, p_payment_intent, p_charge_id, refund.amount, refund.status, refund.counted);
  END LOOP;
  SELECT * INTO result_status, result_user_id, result_note FROM credit_settle_take_back(p_payment_intent, p_event_id);
END $$;

-- A webhook event in one call: claims it (a duplicate ends here), applies its rule, records the outcome.
CREATE FUNCTION credit_event_purchase(
  p_event_id text, p_event_type text, p_event_livemode boolean, p_event_created bigint, p_lock_key text,
  p_user_id text, p_session_id text, p_payment_intent text, p_credits bigint, p_amount_total bigint, p_currency text, p_livemode boolean, p_status text,
  OUT result_status text, OUT result_user_id text, OUT result_note text)
LANGUAGE plpgsql AS $$
BEGIN
  IF NOT credit_claim_event(p_event_id, p_event_type, p_event_livemode, p_event_created, 'processed', p_lock_key) THEN
    result_status := 'duplicate';
    RETURN;
  END IF;
  SELECT * INTO result_status, result_user_id, result_note
  FROM credit_record_purchase(p_user_id, p_session_id, p_payment_intent, p_credits, p_amount_total, p_currency, p_livemode, p_status, p_event_id);
  PERFORM credit_set_event_outcome(p_event_id, result_status, result_note);
END $$;

CREATE FUNCTION credit_event_refund(
  p_event_id text, p_event_type text, p_event_livemode boolean, p_event_created bigint, p_lock_key text,
  p_id text, p_payment_intent text, p_charge_id text, p_amount bigint, p_status text, p_counted boolean,
  OUT result_status text, OUT result_user_id text, OUT result_note text)
LANGUAGE plpgsql AS $$
BEGIN
  IF NOT credit_claim_event(p_event_id, p_event_type, p_event_livemode, p_event_created, 'processed', p_lock_key) THEN
    result_status := 'duplicate';
    RETURN;
  END IF;
  SELECT * INTO result_status, result_user_id, result_note
  FROM credit_record_refund(p_id, p_payment_intent, p_charge_id, p_amount, p_status, p_counted, p_event_id);
  PERFORM credit_set_event_outcome(p_event_id, result_status, result_note);
END $$;

CREATE FUNCTION credit_event_charge_refunded(
  p_event_id text, p_event_type text, p_event_livemode boolean, p_event_created bigint, p_lock_key text,
  p_payment_intent text, p_charge_id text, p_amount bigint, p_amount_refunded bigint, p_refunds jsonb,
  OUT result_status text, OUT result_user_id text, OUT result_note text)
LANGUAGE plpgsql AS $$
BEGIN
  IF NOT credit_claim_event(p_event_id, p_event_type, p_event_livemode, p_event_created, 'processed', p_lock_key) THEN
    result_status := 'duplicate';
    RETURN;
  END IF;
  SELECT * INTO result_status, result_user_id, result_note
  FROM credit_record_charge_refunded(p_payment_intent, p_charge_id, p_amount, p_amount_refunded, p_event_created, p_refunds, p_event_id);
  PERFORM credit_set_event_outcome(p_event_id, result_status, result_note);
END $$;
