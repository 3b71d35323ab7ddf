/**
 * The database-only figure (information, not the yardstick), run as its own process (forked by run.ts): the SQL work the service does per
 * event (`processEvent`, one transaction), on the same events, at the same concurrency, through a pool
 * of the same size, with no HTTP, no signature check, no JSON parsing and no logging.
 */
import { emptyCatalog } from '../../service/credits/catalog';
import { connectDatabase } from '../../service/db';
import { createLogger } from '../../service/logger';
import { processEvent } from '../../service/webhook/processEvent';
import type { StripeEvent } from '../../service/webhook/stripeEvent';
import { postgresCpuTicks } from './procStats';
import { buildWorkload, type ItemKind } from './workload';

export interface CeilingMessage {
  type: 'ceiling';
  databaseUrl: string;
  poolMax: number;
  concurrency: number;
  durationMillis: number;
  prefix: string;
  count: number;
  seed: number;
}

export interface CeilingResult {
  type: 'ceiling-result';
  transactions: number;
  elapsedMillis: number;
  exhausted: boolean;
  latenciesMillis: Record<ItemKind, number[]>;
  outcomes: Record<string, number>;
  errors: number;
  cpuMillis: number;
  /** CPU time all PostgreSQL processes used during the run. */
  postgresCpuTicks: number;
}

async function ceiling(message: CeilingMessage): Promise<CeilingResult> {
  // Parsed copies, as the service holds them after JSON.parse of the body.
  const items = buildWorkload({ prefix: message.prefix, count: message.count, seed: message.seed }).map((item) => ({
    kind: item.kind,
    event: JSON.parse(JSON.stringify(item.event)) as StripeEvent,
  }));
  const db = connectDatabase({ connectionString: message.databaseUrl, poolMax: message.poolMax, logger: createLogger('silent') });
  const context = { catalog: emptyCatalog(), fetchLineItems: undefined };
  // Open the pool's connections before the clock starts, as a warmed-up service has them.
  await Promise.all(Array.from({ length: message.poolMax }, () => db.withTransaction((tx) => tx.query('SELECT 1'))));

  const latenciesMillis: Record<ItemKind, number[]> = { new: [], duplicate: [], subscription: [], refund: [] };
  const outcomes: Record<string, number> = {};
  let errors = 0;
  let next = 0;
  const cpuBefore = process.cpuUsage();
  const postgresBefore = postgresCpuTicks();
  const startedAt = performance.now();
  const deadline = startedAt + message.durationMillis;
  const worker = async () => {
    while (next < items.length && performance.now() < deadline) {
      const item = items[next++]!;
      const begun = performance.now();
      try {
        const result = await processEvent(db, item.event, context);
        outcomes[result.status] = (outcomes[result.status] ?? 0) + 1;
      } catch {
        errors++;
      }
      latenciesMillis[item.kind].push(performance.now() - begun);
    }
  };
  await Promise.all(Array.from({ length: message.concurrency }, worker));
  const elapsedMillis = performance.now() - startedAt;
  const cpu = process.cpuUsage(cpuBefore);
  const postgresTicks = Math.max(0, postgresCpuTicks() - postgresBefore);
  await db.close();
  return {
    type: 'ceiling-result',
    transactions: next,
    elapsedMillis,
    exhausted: next >= items.length,
    latenciesMillis,
    outcomes,
    errors,
    cpuMillis: (cpu.user + cpu.system) / 1000,
    postgresCpuTicks: postgresTicks,
  };
}

process.on('message', (message: CeilingMessage | { type: 'exit' }) => {
  if (message.type === 'ceiling') void ceiling(message).then((result) => process.send!(result));
  else process.exit(0);
});
process.on('disconnect', () => process.exit(0));
