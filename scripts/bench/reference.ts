/**
 * The thin-ingest reference, run as its own process (forked by run.ts): what a sync-only ingester (such as
 * stripe/sync-engine) does with a delivery, on the service's own HTTP stack, raw-body reading and signature
 * check, storing each event with one `INSERT … ON CONFLICT DO NOTHING` through the service's own pool.
 * It credits nobody: it is the yardstick the service's throughput is divided by, and it does not move when
 * the service's SQL does.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import Koa from 'koa';
import { connectDatabase, type Database } from '../../service/db';
import { createLogger } from '../../service/logger';
import { readRawBody } from '../../service/webhook/route';
import { fixedSecrets } from '../../service/webhook/secretStore';
import { parseStripeEvent } from '../../service/webhook/stripeEvent';
import { verifyStripeSignature } from '../../service/webhook/verifySignature';

export interface ReferenceStartMessage {
  type: 'start';
  databaseUrl: string;
  poolMax: number;
  secret: string;
}

export interface ReferenceReady {
  type: 'ready';
  url: string;
}

export const referenceTableSql = `
  CREATE TABLE IF NOT EXISTS thin_ingest_events (
    id          text PRIMARY KEY,
    type        text NOT NULL,
    livemode    boolean NOT NULL,
    created     timestamptz NOT NULL,
    data        jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
  )`;

const insertSql = `
  INSERT INTO thin_ingest_events (id, type, livemode, created, data) VALUES ($1, $2, $3, to_timestamp($4), $5)
  ON CONFLICT (id) DO NOTHING`;
const maxBodyBytes = 1024 * 1024;
const toleranceSeconds = 300;

let db: Database | undefined;

async function start(message: ReferenceStartMessage): Promise<ReferenceReady> {
  db = connectDatabase({ connectionString: message.databaseUrl, poolMax: message.poolMax, logger: createLogger('silent') });
  const database = db;
  await database.query(referenceTableSql);
  const secrets = fixedSecrets([message.secret]);
  const koa = new Koa({ proxy: true });
  koa.use(async (ctx) => {
    if (ctx.method !== 'POST') ctx.throw(405);
    const body = (await readRawBody(ctx, maxBodyBytes)).toString('utf8');
    try {
      verifyStripeSignature({ body, signatureHeader: ctx.get('stripe-signature') || undefined, secrets: secrets.current(), nowMillis: Date.now(), toleranceSeconds });
    } catch {
      ctx.status = 400;
      ctx.body = { received: false, error: 'unauthentic' };
      return;
    }
    const event = parseStripeEvent(body);
    const { rowCount } = await database.query(insertSql, [event.id, event.type, event.livemode, event.created, JSON.stringify(event.data.object)]);
    ctx.body = { received: true, status: rowCount === 1 ? 'stored' : 'duplicate' };
  });
  const server = createServer(koa.callback());
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  // Open the pool's connections before the clock starts, as the warmed-up service has them.
  await Promise.all(Array.from({ length: message.poolMax }, () => database.withTransaction((tx) => tx.query('SELECT 1'))));
  return { type: 'ready', url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/webhook` };
}

process.on('message', (message: ReferenceStartMessage | { type: 'exit' }) => {
  if (message.type === 'start') void start(message).then((ready) => process.send!(ready));
  else void db?.close().finally(() => process.exit(0));
});
process.on('disconnect', () => process.exit(0));
