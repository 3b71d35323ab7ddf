-- Live balance updates no longer NOTIFY inside crediting transactions: a notifying transaction's commit takes a
-- cluster-wide lock until it is flushed, which serialised every commit (README, "What bounds the ratio"). The
-- process that committed a change tells the other replicas itself, in batches (service/users/balanceChanges.ts).
DROP TRIGGER service_subscriptions_balance_changed ON service_subscriptions;
DROP FUNCTION notify_credit_balance_changed();
