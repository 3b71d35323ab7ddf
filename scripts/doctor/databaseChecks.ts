/**
 * The database: reachable, migrated to what this code expects, what happened to recent events, which events
 * are still not applied (and the command that applies each), and one user's balance and ledger (the old
 * guide's SQL query, answered here).
 */
import { connectDatabase, describeError, type Database } from '../../service/db';
import { createLogger } from '../../service/logger';
import { migrationFiles } from '../../service/migrations';
import { databaseConnectionProblem } from '../../service/startupFailure';
import { failed, ok, skipped, type CheckResult } from './report';
import { formatSeconds } from './stripeChecks';

export interface DatabaseCheckOptions {
  connectionString: string;
  passwordFile?: string;
  /** How far back "recent events" go. */
  sinceSeconds: number;
  user?: string;
  replayCommand: (eventId: string) => string;
}

const notAppliedListed = 20;
const ledgerEntriesListed = 10;

/** Where the database is, for messages: never the password. */
function serverName(connectionString: string): string {
  const url = new URL(connectionString);
  return `${url.hostname || 'localhost'}:${url.port || '5432'}/${decodeURIComponent(url.pathname.slice(1)) || 'postgres'}`;
}

export async function checkDatabase(options: DatabaseCheckOptions): Promise<CheckResult[]> {
  const later = ['database-migrated', 'recent-events', 'events-not-applied', ...(options.user ? ['user-balance'] : [])];
  const db = connectDatabase({ connectionString: options.connectionString, passwordFile: options.passwordFile, poolMax: 2, logger: createLogger('silent') });
  try {
    try {
      await db.ping();
    } catch (error) {
      return [
        failed('database', 'database-reachable', 'the database is reachable', {
          detail: databaseConnectionProblem(error, options.connectionString),
          fix: 'start PostgreSQL (a stack: `docker start stripe-credits-<stack>-postgres`; npm start: it starts its own and logs its address), or fix DATABASE_URL / DATABASE_URL_FILE (and DATABASE_PASSWORD_FILE). The service answers 503 meanwhile and Stripe retries.',
        }),
        ...later.map((id) => skipped(id === 'user-balance' ? 'user' : 'database', id, id.replace(/-/g, ' '), 'the database is not reachable')),
      ];
    }
    const results = [ok('database', 'database-reachable', 'the database is reachable', { detail: serverName(options.connectionString) })];
    try {
      const migrated = await checkMigrations(db);
      results.push(migrated);
      if (migrated.status === 'failed' && migrated.data === 'no-schema') {
        return [...results, ...later.slice(1).map((id) => skipped(id === 'user-balance' ? 'user' : 'database', id, id.replace(/-/g, ' '), 'the database has no schema yet'))];
      }
      results.push(await recentEvents(db, options.sinceSeconds), await eventsNotApplied(db, options.replayCommand));
      if (options.user) results.push(await userBalance(db, options.user));
    } catch (error) {
      // Reachable, but a query failed (a role without the service's grants, a schema changed by hand).
      results.push(
        failed('database', 'database-read', 'the service\'s tables can be read', {
          detail: describeError(error).message,
          fix: 'connect as the service\'s own role (the URL the service uses), and check that DATABASE_URL names the service\'s database.',
        }),
      );
    }
    return results;
  } finally {
    await db.close().catch(() => undefined);
  }
}

async function checkMigrations(db: Database): Promise<CheckResult> {
  const title = 'the database is migrated to what this code expects';
  const expected = await migrationFiles();
  let applied: string[];
  try {
    applied = (await db.query<{ name: string }>('SELECT name FROM schema_migrations ORDER BY name')).rows.map((row) => row.name);
  } catch (error) {
    if ((error as { code?: string }).code !== '42P01') throw error;
    return failed('database', 'database-migrated', title, {
      detail: 'no schema_migrations table: the service never started on this database',
      fix: 'start the service on it (it migrates at start) or run `npm run migrate` with the same DATABASE_URL; check that DATABASE_URL names the service\'s database.',
      data: 'no-schema',
    });
  }
  const missing = expected.filter((name) => !applied.includes(name));
  const unknown = applied.filter((name) => !expected.includes(name));
  if (missing.length > 0) {
    return failed('database', 'database-migrated', title, {
      detail: `not applied: ${missing.join(', ')}`,
      fix: '`npm run migrate` (or start a replica of this version: it migrates at start, under a lock). A running service of an older version works on the newer schema.',
    });
  }
  const note = unknown.length > 0 ? `; also ${unknown.join(', ')}, newer than this checkout (update it before trusting the doctor)` : '';
  return ok('database', 'database-migrated', title, { detail: `${applied.length} migrations applied, the last ${applied.at(-1)}${note}` });
}

async function recentEvents(db: Database, sinceSeconds: number): Promise<CheckResult> {
  const { rows } = await db.query<{ status: string; count: number }>(
    'SELECT status, count(*)::int AS count FROM stripe_events WHERE received_at > now() - make_interval(secs => $1) GROUP BY status ORDER BY status',
    [sinceSeconds],
  );
  const counts = Object.fromEntries(['processed', 'ignored', 'unmatched', 'failed'].map((status) => [status, rows.find((row) => row.status === status)?.count ?? 0]));
  const total = rows.reduce((sum, row) => sum + row.count, 0);
  const summary = Object.entries(counts).map(([status, count]) => `${count} ${status}`).join(', ');
  return ok('database', 'recent-events', `events received in the last ${formatSeconds(sinceSeconds)}, by outcome`, {
    detail: total === 0 ? 'none (no delivery reached the service: see the pending deliveries)' : summary,
    data: counts,
  });
}

async function eventsNotApplied(db: Database, replayCommand: (eventId: string) => string): Promise<CheckResult> {
  const title = 'every event received was applied (none failed or unmatched)';
  const { rows } = await db.query<{ id: string; type: string; status: string; error: string | null; received_at: Date; total: number }>(
    `SELECT id, type, status, error, received_at, count(*) OVER ()::int AS total FROM stripe_events
     WHERE status IN ('failed', 'unmatched') ORDER BY received_at DESC LIMIT $1`,
    [notAppliedListed],
  );
  if (rows.length === 0) return ok('database', 'events-not-applied', title, { detail: 'none' });
  const total = rows[0]!.total;
  return failed('database', 'events-not-applied', title, {
    detail: `${total} event${total > 1 ? 's' : ''} not applied${total > rows.length ? ` (the newest ${rows.length} below)` : ''}`,
    items: rows.map((row) => `${row.id} ${row.type} ${row.status} ${row.received_at.toISOString()}: ${row.error ?? '(no reason recorded)'} → ${replayCommand(row.id)}`),
    fix: 'each reason says what is wrong (a failed one: our fault, the service\'s log has the details; an unmatched one: a user, price or purchase not known yet). Fix the cause, then re-apply the event with the command after it; it grants at most once.',
    data: rows.map((row) => ({ id: row.id, type: row.type, status: row.status, reason: row.error, received_at: row.received_at.toISOString() })),
  });
}

async function userBalance(db: Database, user: string): Promise<CheckResult> {
  const title = `the credits of user ${user} equal the sum of their ledger`;
  // The old guide's query, and the ledger that explains it.
  const balance = (await db.query<{ user_id: string; credits_remaining: number; purchased_credits_balance: number; plan: string | null; status: string | null }>(
    'SELECT user_id, credits_remaining, purchased_credits_balance, plan, status FROM service_subscriptions WHERE user_id = $1',
    [user],
  )).rows[0];
  const sums = (await db.query<{ bucket: string; total: number }>('SELECT bucket, sum(delta)::bigint AS total FROM credit_ledger WHERE user_id = $1 GROUP BY bucket', [user])).rows;
  const ledger = (await db.query<{ created_at: Date; bucket: string; delta: number; reason: string; stripe_event_id: string | null; source_id: string | null }>(
    'SELECT created_at, bucket, delta, reason, stripe_event_id, source_id FROM credit_ledger WHERE user_id = $1 ORDER BY id DESC LIMIT $2',
    [user, ledgerEntriesListed],
  )).rows;
  const items = ledger.map(
    (entry) => `${entry.created_at.toISOString()} ${entry.bucket} ${entry.delta > 0 ? '+' : ''}${entry.delta} ${entry.reason}${entry.stripe_event_id ? ` ${entry.stripe_event_id}` : ''}${entry.source_id ? ` (${entry.source_id})` : ''}`,
  );
  if (!balance) {
    return failed('user', 'user-balance', title, {
      detail: `no credits were ever recorded for ${user}`,
      fix: `check the id (it is the Checkout session's client_reference_id); a purchase that did not arrive shows as a pending delivery or an unmatched event above: re-apply it with the command shown there, or ask the user to press "Sync credits".`,
      data: { user_id: user, found: false },
    });
  }
  const ledgerSum = (bucket: string) => sums.find((row) => row.bucket === bucket)?.total ?? 0;
  const data = { user_id: user, found: true, credits_remaining: balance.credits_remaining, purchased_credits_balance: balance.purchased_credits_balance, plan: balance.plan, subscription_status: balance.status, ledger: ledger.map((entry) => ({ ...entry, created_at: entry.created_at.toISOString() })) };
  const detail = `${balance.credits_remaining + balance.purchased_credits_balance} credits: ${balance.purchased_credits_balance} purchased, ${balance.credits_remaining} subscription${balance.plan ? ` (${balance.plan}, ${balance.status})` : ''}; the latest ledger entries:`;
  if (ledgerSum('purchased') !== balance.purchased_credits_balance || ledgerSum('subscription') !== balance.credits_remaining) {
    return failed('user', 'user-balance', title, {
      detail: `${detail.replace(/; the latest.*/, '')}, but the ledger sums to ${ledgerSum('purchased')} purchased, ${ledgerSum('subscription')} subscription`,
      items,
      fix: 'a balance was changed outside the service (a manual UPDATE?): the ledger is the record; correct the balance to the ledger\'s sums and find who changed it.',
      data,
    });
  }
  return ok('user', 'user-balance', title, { detail, items, data });
}

