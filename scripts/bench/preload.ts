/**
 * A database as large as a busy deployment's, for measuring at scale: 1 M events, 1 M paid purchases and
 * their 1 M ledger entries, 100 k users whose balances equal their ledgers. Built once with generate_series
 * into a template database named after the migrations (a schema change builds a new one), then copied for
 * each run with CREATE DATABASE … TEMPLATE, which copies files instead of inserting rows.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { connectDatabase, type Database } from '../../service/db';
import { createLogger } from '../../service/logger';
import { runMigrations } from '../../service/migrations';
import { databaseUrl, testServerUrl, type TestDatabase } from '../../service/test/support/testDatabase';

export const preloadedEvents = 1_000_000;
export const preloadedUsers = 100_000;
const creditsPerPurchase = 100;
const templatePrefix = 'credits_bench_preload_';
/** Templates of other schemas kept besides the current one (each is about 1 GB). */
const keptTemplates = 2;

// Consistent with every invariant the bench checks: each event a paid purchase, each purchase one ledger
// entry, each balance the sum of its user's entries. Ids never collide with the workload's (s…/c… prefixes).
const fillSql = `
  SET statement_timeout = 0;
  INSERT INTO stripe_events (id, type, livemode, created, status, processed_at)
    SELECT 'evt_preload_' || g, 'checkout.session.completed', false, now() - interval '30 days', 'processed', now() FROM generate_series(1, ${preloadedEvents}) g;
  INSERT INTO credit_purchases (user_id, stripe_checkout_session_id, payment_intent, credits, amount_total, currency, livemode, status, paid_at)
    SELECT 'preload_user_' || (g % ${preloadedUsers}), 'cs_preload_' || g, 'pi_preload_' || g, ${creditsPerPurchase}, 1000, 'usd', false, 'paid', now()
    FROM generate_series(1, ${preloadedEvents}) g;
  INSERT INTO credit_ledger (user_id, bucket, delta, reason, stripe_event_id, source_id)
    SELECT 'preload_user_' || (g % ${preloadedUsers}), 'purchased', ${creditsPerPurchase}, 'credit_purchase', 'evt_preload_' || g, 'cs_preload_' || g
    FROM generate_series(1, ${preloadedEvents}) g;
  INSERT INTO service_subscriptions (user_id, purchased_credits_balance)
    SELECT 'preload_user_' || u, ${(preloadedEvents / preloadedUsers) * creditsPerPurchase} FROM generate_series(0, ${preloadedUsers - 1}) u;
  VACUUM ANALYZE`;

const migrationsDir = path.resolve(__dirname, '../../service/migrations');

function templateName(): string {
  const hash = createHash('sha256').update(fillSql);
  for (const file of readdirSync(migrationsDir).sort()) hash.update(file).update(readFileSync(path.join(migrationsDir, file)));
  return `${templatePrefix}${hash.digest('hex').slice(0, 12)}`;
}

function admin(): Database {
  return connectDatabase({ connectionString: testServerUrl, poolMax: 1, logger: createLogger('silent') });
}

/** Builds the template unless this schema's is there already; drops templates of earlier schemas. */
async function ensureTemplate(progress: (text: string) => void): Promise<string> {
  const name = templateName();
  const server = admin();
  try {
    // Newest first; a template of another schema is kept while it is among the newest few (a branch and
    // main measured in turn), older ones are dropped. A build under way (another bench) is left alone.
    const { rows } = await server.query<{ datname: string }>('SELECT datname FROM pg_database WHERE datname LIKE $1 ORDER BY oid DESC', [`${templatePrefix}%`]);
    const finished = rows.filter((row) => !row.datname.includes('_building_'));
    for (const { datname } of rows) {
      const keep = datname === name || finished.slice(0, keptTemplates).some((row) => row.datname === datname);
      if (!keep && !datname.includes('_building_')) await server.query(`DROP DATABASE IF EXISTS ${datname} WITH (FORCE)`);
    }
    if (rows.some((row) => row.datname === name)) return name;
    progress(`building the preloaded template ${name} (${preloadedEvents.toLocaleString('en-US')} events and ledger rows, ${preloadedUsers.toLocaleString('en-US')} users; once per schema)`);
    const building = `${name}_building_${randomBytes(3).toString('hex')}`;
    await server.query(`CREATE DATABASE ${building}`);
    const db = connectDatabase({ connectionString: databaseUrl(building), poolMax: 1, logger: createLogger('silent') });
    try {
      await runMigrations(db, createLogger('silent'));
      for (const statement of fillSql.split(';').filter((sql) => sql.trim())) await db.query(statement);
    } catch (error) {
      await db.close();
      await server.query(`DROP DATABASE IF EXISTS ${building} WITH (FORCE)`);
      throw error;
    }
    await db.close();
    await server.query(`ALTER DATABASE ${building} RENAME TO ${name}`);
    return name;
  } finally {
    await server.close();
  }
}

/** A fresh copy of the preloaded template; `drop()` removes the copy, never the template. */
export async function createPreloadedDatabase(progress: (text: string) => void): Promise<TestDatabase> {
  const template = await ensureTemplate(progress);
  const name = `credits_bench_${randomBytes(6).toString('hex')}`;
  const server = admin();
  try {
    // FILE_COPY (PostgreSQL 15+) copies the files between two checkpoints; the default writes the whole copy
    // to the WAL, whose flushes and checkpoints would then slow down the runs being measured.
    const { rows } = await server.query<{ version: string }>("SELECT current_setting('server_version_num') AS version");
    const strategy = Number(rows[0]!.version) >= 150_000 ? ' STRATEGY = FILE_COPY' : '';
    await server.query(`CREATE DATABASE ${name} TEMPLATE ${template}${strategy}`);
  } finally {
    await server.close();
  }
  const url = databaseUrl(name);
  const db = connectDatabase({ connectionString: url, poolMax: 4, logger: createLogger('silent') });
  return {
    url,
    db,
    async drop() {
      await db.close();
      const cleanup = admin();
      await cleanup.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await cleanup.close();
    },
  };
}
