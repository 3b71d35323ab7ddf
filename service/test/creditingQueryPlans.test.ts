/**
 * Every statement a crediting transaction runs finds its rows through an index, on tables as large as a busy
 * deployment's: a sequential scan inside the transaction would hold its locks for as long as the table takes
 * to read (an index on stripe_subscriptions.user_id was missing: 100–190 ms per subscription end at 200k rows).
 *
 * Each hot path is applied for real through processEvent on a connection where auto_explain reports the plan
 * of every statement it runs, those inside the crediting functions of migration 004 included (a hot path is
 * one function call). Rows per table: CREDITING_PLAN_ROWS (default 100,000; the plans were also checked at
 * 1,000,000).
 */
import { randomUUID } from 'node:crypto';
import { emptyCatalog } from '../credits/catalog';
import { connectDatabase, type Database } from '../db';
import { createLogger } from '../logger';
import { processEvent, type EventContext } from '../webhook/processEvent';
import type { StripeEvent } from '../webhook/stripeEvent';
import { charge, checkoutSession, dispute, invoice, invoicePayment, refund, stripeEvent, subscription, subscriptionCheckoutSession } from './support/stripeFixtures';
import { createTestDatabase, type TestDatabase } from './support/testDatabase';

const rowsPerTable = Number(process.env.CREDITING_PLAN_ROWS ?? 100_000);
const fillTimeoutMillis = 600_000;

let database: TestDatabase;
/** The same database, on one connection whose every statement's plan (nested ones too) arrives in `plans`. */
let explained: Database;
const plans: PlanReport[] = [];

// Every table the crediting transactions touch, filled with rows shaped like real ones: many users, each with
// purchases, refunds, disputes, subscriptions with several periods and invoices.
const fillSql = `
  INSERT INTO stripe_events (id, type, livemode, created, status, processed_at)
    SELECT 'evt_fill_' || g, 'checkout.session.completed', false, now(), 'processed', now() FROM generate_series(1, $rows) g;
  INSERT INTO credit_purchases (user_id, stripe_checkout_session_id, payment_intent, credits, amount_total, currency, livemode, status, paid_at)
    SELECT 'user_fill_' || (g % $users), 'cs_fill_' || g, 'pi_fill_' || g, 100, 1000, 'usd', false, 'paid', now() FROM generate_series(1, $rows) g;
  INSERT INTO credit_ledger (user_id, bucket, delta, reason, stripe_event_id, source_id)
    SELECT 'user_fill_' || (g % $users), 'purchased', 100, 'credit_purchase', 'evt_fill_' || g, 'cs_fill_' || g FROM generate_series(1, $rows) g;
  INSERT INTO service_subscriptions (user_id, purchased_credits_balance, stripe_customer_id, stripe_subscription_id, credited_period_start)
    SELECT 'user_fill_' || g, 0, 'cus_fill_' || g, 'sub_fill_' || g, date_trunc('day', now()) FROM generate_series(1, $rows) g;
  INSERT INTO stripe_subscriptions (id, customer_id, user_id, status, event_created, ended, event_id, subscription_created, current_period_start, current_period_end)
    SELECT 'sub_fill_' || g, 'cus_fill_' || g, 'user_fill_' || g, 'active', now() - interval '1 day', false, 'evt_fill_' || g, now() - interval '1 year',
           date_trunc('day', now()), date_trunc('day', now()) + interval '30 days' FROM generate_series(1, $rows) g;
  INSERT INTO subscription_periods (subscription_id, period_start, period_end, plan_allowance, granted)
    SELECT 'sub_fill_' || (g % $users), date_trunc('day', now()) - (g / $users) * interval '30 days',
           date_trunc('day', now()) - (g / $users - 1) * interval '30 days', 100, 100 FROM generate_series(1, $rows) g;
  INSERT INTO subscription_invoices (id, subscription_id, lines, latest_line_start, amount_paid)
    SELECT 'in_fill_' || g, 'sub_fill_' || (g % $users), '[]', date_trunc('day', now()) - (g / $users) * interval '30 days', 1000 FROM generate_series(1, $rows) g;
  INSERT INTO invoice_payments (payment_intent, invoice_id) SELECT 'pi_invoice_fill_' || g, 'in_fill_' || g FROM generate_series(1, $rows) g;
  INSERT INTO payment_refunds (id, payment_intent, charge_id, amount, status, counted)
    SELECT 're_fill_' || g, 'pi_fill_' || g, 'ch_fill_' || g, 100, 'succeeded', true FROM generate_series(1, $rows) g;
  INSERT INTO charge_refunds (payment_intent, charge_id, amount, amount_refunded, reported_at)
    SELECT 'pi_fill_' || g, 'ch_fill_' || g, 1000, 100, now() FROM generate_series(1, $rows) g;
  INSERT INTO checkout_sessions (session_id, user_id, mode, price_id, credits, status, livemode, expires_at)
    SELECT 'cs_fill_' || g, 'user_fill_' || (g % $users), 'payment', 'price_fill', 100, 'complete', false, now() FROM generate_series(1, $rows) g;
  INSERT INTO payment_disputes (id, payment_intent, charge_id, amount, status, counted, reported_at, stage)
    SELECT 'dp_fill_' || g, 'pi_fill_' || g, 'ch_fill_' || g, 100, 'won', false, now(), 2 FROM generate_series(1, $rows) g;`;

beforeAll(async () => {
  database = await createTestDatabase({ poolMax: 4 });
  const users = Math.max(1, Math.floor(rowsPerTable / 4));
  const statements = fillSql.replaceAll('$rows', String(rowsPerTable)).replaceAll('$users', String(users)).split(';').filter((sql) => sql.trim());
  await database.db.withTransaction(async (tx) => {
    await tx.query('SET LOCAL statement_timeout = 0');
    for (const sql of statements) await tx.query(sql);
  });
  await database.db.query('ANALYZE');
  const name = new URL(database.url).pathname.slice(1);
  for (const setting of ["session_preload_libraries = 'auto_explain'", 'auto_explain.log_min_duration = 0', 'auto_explain.log_nested_statements = on', "auto_explain.log_format = 'json'", "auto_explain.log_level = 'notice'"]) {
    await database.db.query(`ALTER DATABASE ${name} SET ${setting}`);
  }
  explained = connectDatabase({ connectionString: database.url, poolMax: 1, logger: createLogger('silent'), onNotice: collectPlan });
}, fillTimeoutMillis);
afterAll(async () => {
  await explained?.close();
  await database?.drop();
});

interface PlanNode {
  'Node Type': string;
  'Relation Name'?: string;
  Plans?: PlanNode[];
}

interface PlanReport {
  sql: string;
  sequentialScans: string[];
}

function sequentialScans(node: PlanNode): string[] {
  const own = node['Node Type'] === 'Seq Scan' ? [node['Relation Name'] ?? '?'] : [];
  return [...own, ...(node.Plans ?? []).flatMap(sequentialScans)];
}

/** auto_explain's notice: "duration: … ms  plan:" and the plan as JSON. */
function collectPlan(message: string): void {
  const json = message.indexOf('{');
  if (!message.includes('plan:') || json < 0) return;
  const report = JSON.parse(message.slice(json)) as { 'Query Text': string; Plan: PlanNode };
  plans.push({ sql: report['Query Text'].replace(/\s+/g, ' ').trim().slice(0, 160), sequentialScans: sequentialScans(report.Plan) });
}

/** The plans of every statement `work` ran, nested ones included (notices arrive before each query's answer). */
async function plansOf(work: () => Promise<unknown>): Promise<PlanReport[]> {
  plans.length = 0;
  await work();
  return [...plans];
}

const context: EventContext = { catalog: emptyCatalog(), fetchLineItems: undefined };
const fresh = (prefix: string) => `${prefix}_${randomUUID().replaceAll('-', '')}`;

/** The hot paths: events of every handled kind, against rows that exist among the many. */
function hotPathEvents(): Array<[string, object]> {
  const buyer = 'user_fill_3';
  const purchase = stripeEvent('checkout.session.completed', checkoutSession({ client_reference_id: buyer, metadata: { credits: '10' } }));
  const renewed = subscription({ id: 'sub_fill_20', customer: 'cus_fill_20' }, { monthlyCredits: 100, periodStart: Math.floor(Date.now() / 1000) + 86400 });
  const ended = subscription({ id: 'sub_fill_21', customer: 'cus_fill_21', status: 'canceled' }, { monthlyCredits: 100 });
  const paidRenewal = invoice({ billing_reason: 'subscription_cycle' }, { subscription: renewed });
  return [
    ['a new paid Checkout session', purchase],
    ['a duplicate delivery', purchase],
    ['an ignored type', stripeEvent('customer.created', { id: fresh('cus'), object: 'customer' })],
    ['charge.refunded', stripeEvent('charge.refunded', charge({ payment_intent: 'pi_fill_10', amount: 1000, amount_refunded: 500 }))],
    ['refund.created', stripeEvent('refund.created', refund({ amount: 300, payment_intent: 'pi_fill_11' }))],
    ['refund.failed of a payment that bought nothing', stripeEvent('refund.failed', refund({ amount: 300, status: 'failed', payment_intent: fresh('pi') }))],
    ['charge.dispute.created', stripeEvent('charge.dispute.created', dispute({ amount: 1000, payment_intent: 'pi_fill_12' }))],
    ['a subscription renewed', stripeEvent('customer.subscription.updated', renewed)],
    ['its renewal invoice paid', stripeEvent('invoice.paid', paidRenewal)],
    ['the invoice payment', stripeEvent('invoice_payment.paid', invoicePayment(paidRenewal))],
    ['a subscription ended', stripeEvent('customer.subscription.deleted', ended)],
    ['a sign-up linking a new subscription', stripeEvent('checkout.session.completed', subscriptionCheckoutSession({ client_reference_id: 'user_fill_22', customer: 'cus_fill_22' }))],
  ];
}

test(`every statement of every crediting transaction reads through an index with ${rowsPerTable.toLocaleString('en-US')} rows per table (defect 10)`, async () => {
  const found: Array<{ path: string } & PlanReport> = [];
  let statementCount = 0;
  for (const [path, event] of hotPathEvents()) {
    const ran = await plansOf(() => processEvent(explained, event as unknown as StripeEvent, context));
    statementCount += ran.length;
    for (const plan of ran) if (plan.sequentialScans.length > 0) found.push({ path, ...plan });
  }
  expect(statementCount).toBeGreaterThan(30);
  expect(found).toEqual([]);
}, 120_000);

test('the check sees a sequential scan when a lookup has no index, inside a function too', async () => {
  const direct = await plansOf(() => explained.query('SELECT 1 FROM credit_ledger WHERE reason = $1', ['usage']));
  expect(direct.flatMap((plan) => plan.sequentialScans)).toEqual(['credit_ledger']);
  await explained.query(`CREATE FUNCTION pg_temp.count_usage(p_reason text) RETURNS bigint LANGUAGE plpgsql AS $$
    BEGIN RETURN (SELECT count(*) FROM credit_ledger WHERE reason = p_reason); END $$`);
  const nested = await plansOf(() => explained.query('SELECT pg_temp.count_usage($1)', ['usage']));
  expect(nested.flatMap((plan) => plan.sequentialScans)).toEqual(['credit_ledger']);
});

test('a new paid Checkout session, its duplicate, an ignored type and a refund each take one statement, no transaction', async () => {
  const statements: string[] = [];
  const counting: Database = {
    ...explained,
    query(sql, params) {
      statements.push(typeof sql === 'string' ? sql : sql.text);
      return explained.query(sql, params);
    },
    withTransaction: () => Promise.reject(new Error('a hot path opened a transaction')),
  };
  const purchase = stripeEvent('checkout.session.completed', checkoutSession({ client_reference_id: 'user_fill_5', payment_intent: fresh('pi'), metadata: { credits: '10' } }));
  const paymentIntent = (purchase.data.object as { payment_intent: string }).payment_intent;
  for (const event of [
    purchase,
    purchase,
    stripeEvent('customer.created', { id: fresh('cus'), object: 'customer' }),
    stripeEvent('charge.refunded', charge({ payment_intent: paymentIntent, amount: 1000, amount_refunded: 1000 })),
    stripeEvent('refund.created', refund({ amount: 300, payment_intent: 'pi_fill_13' })),
  ]) {
    statements.length = 0;
    await processEvent(counting, event as unknown as StripeEvent, context);
    expect(statements).toHaveLength(1);
  }
});

test('a duplicate of an applied event writes nothing, not even a row lock, so its commit waits for no WAL flush', async () => {
  const purchase = stripeEvent('checkout.session.completed', checkoutSession({ client_reference_id: 'user_fill_6', metadata: { credits: '10' } }));
  expect(await processEvent(explained, purchase as unknown as StripeEvent, context)).toMatchObject({ status: 'processed' });
  const rowVersion = async () => (await explained.query<{ xmin: string; xmax: string }>('SELECT xmin::text, xmax::text FROM stripe_events WHERE id = $1', [purchase.id])).rows[0];
  const before = await rowVersion();
  expect(before?.xmax).toBe('0');
  expect(await processEvent(explained, purchase as unknown as StripeEvent, context)).toEqual({ status: 'duplicate' });
  expect(await rowVersion()).toEqual(before);
});
