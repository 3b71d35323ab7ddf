/**
 * Load generator, run as its own process (forked by run.ts) so that the service is measured alone.
 * It builds and signs every delivery before the clock starts, then posts them over keep-alive HTTP,
 * either closed-loop (N deliveries in flight at all times) or open-loop (a fixed arrival rate, latency
 * counted from the scheduled send time so a slow server cannot hide its queueing).
 */
import http from 'node:http';
import { signStripePayload } from '../../localStripe/signing';
import { buildWorkload, type ItemKind } from './workload';

export interface PrepareMessage {
  type: 'prepare';
  prefix: string;
  count: number;
  seed: number;
  secret: string;
}

export interface RunMessage {
  type: 'run';
  targets: string[];
  concurrency: number;
  durationMillis: number;
  /** Open-loop arrival rate; closed-loop when absent. */
  ratePerSecond?: number;
}

export interface LoadResult {
  type: 'result';
  sent: number;
  elapsedMillis: number;
  /** True when the prepared deliveries ran out before the duration did. */
  exhausted: boolean;
  statusCounts: Record<string, number>;
  outcomes: Record<string, number>;
  latenciesMillis: Record<ItemKind, number[]>;
  /** Item indices answered 2xx. */
  acknowledged: number[];
  cpuMillis: number;
}

interface Prepared {
  kind: ItemKind;
  body: Buffer;
  headers: http.OutgoingHttpHeaders;
}

const maxOpenLoopInFlight = 1_024;
const requestTimeoutMillis = 30_000;

let prepared: Prepared[] = [];

function prepare(message: PrepareMessage): void {
  const items = buildWorkload({ prefix: message.prefix, count: message.count, seed: message.seed });
  const timestampSeconds = Math.floor(Date.now() / 1000);
  const bodies = new Map<string, Buffer>();
  prepared = items.map((item) => {
    // Exact duplicates repeat the original bytes and signature, as a retried delivery within minutes would.
    let body = bodies.get(item.event.id);
    if (!body) {
      body = Buffer.from(JSON.stringify(item.event, null, 2));
      bodies.set(item.event.id, body);
    }
    return {
      kind: item.kind,
      body,
      headers: {
        'content-type': 'application/json; charset=utf-8',
        'user-agent': 'Stripe/1.0 (+https://stripe.com/docs/webhooks)',
        'content-length': body.length,
        'stripe-signature': signStripePayload(body.toString('utf8'), [message.secret], timestampSeconds),
      },
    };
  });
}

function post(agent: http.Agent, target: URL, item: Prepared): Promise<{ status: number; outcome: string }> {
  return new Promise((resolve) => {
    const request = http.request(
      { agent, host: target.hostname, port: target.port, path: target.pathname, method: 'POST', headers: item.headers, timeout: requestTimeoutMillis },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          const outcome = /"status":"(\w+)"/.exec(text)?.[1] ?? /"error":"(\w+)"/.exec(text)?.[1] ?? 'none';
          resolve({ status: response.statusCode ?? 0, outcome });
        });
        response.on('error', () => resolve({ status: 0, outcome: 'connection_error' }));
      },
    );
    request.on('timeout', () => request.destroy(new Error('timeout')));
    request.on('error', () => resolve({ status: 0, outcome: 'connection_error' }));
    request.end(item.body);
  });
}

async function run(message: RunMessage): Promise<LoadResult> {
  const targets = message.targets.map((target) => new URL(target));
  const agent = new http.Agent({ keepAlive: true, maxSockets: message.ratePerSecond ? maxOpenLoopInFlight : message.concurrency });
  const latenciesMillis: Record<ItemKind, number[]> = { new: [], duplicate: [], subscription: [], refund: [] };
  const statusCounts: Record<string, number> = {};
  const outcomes: Record<string, number> = {};
  const acknowledged: number[] = [];
  const cpuBefore = process.cpuUsage();
  const startedAt = performance.now();
  const deadline = startedAt + message.durationMillis;
  let next = 0;

  const send = async (index: number, scheduledAt: number) => {
    const item = prepared[index]!;
    const answer = await post(agent, targets[index % targets.length]!, item);
    latenciesMillis[item.kind].push(performance.now() - scheduledAt);
    statusCounts[answer.status] = (statusCounts[answer.status] ?? 0) + 1;
    outcomes[answer.outcome] = (outcomes[answer.outcome] ?? 0) + 1;
    if (answer.status >= 200 && answer.status < 300) acknowledged.push(index);
  };

  if (message.ratePerSecond) {
    const intervalMillis = 1000 / message.ratePerSecond;
    const inFlight = new Set<Promise<void>>();
    while (next < prepared.length) {
      const scheduledAt = startedAt + next * intervalMillis;
      if (scheduledAt >= deadline) break;
      const wait = scheduledAt - performance.now();
      if (wait > 1) await new Promise((resolve) => setTimeout(resolve, wait));
      if (inFlight.size >= maxOpenLoopInFlight) await Promise.race(inFlight);
      const sending = send(next++, scheduledAt).then(() => {
        inFlight.delete(sending);
      });
      inFlight.add(sending);
    }
    await Promise.all(inFlight);
  } else {
    const worker = async () => {
      while (next < prepared.length && performance.now() < deadline) {
        const index = next++;
        await send(index, performance.now());
      }
    };
    await Promise.all(Array.from({ length: message.concurrency }, worker));
  }
  const elapsedMillis = performance.now() - startedAt;
  agent.destroy();
  const cpu = process.cpuUsage(cpuBefore);
  return {
    type: 'result',
    sent: next,
    elapsedMillis,
    exhausted: next >= prepared.length,
    statusCounts,
    outcomes,
    latenciesMillis,
    acknowledged,
    cpuMillis: (cpu.user + cpu.system) / 1000,
  };
}

process.on('message', (message: PrepareMessage | RunMessage | { type: 'exit' }) => {
  if (message.type === 'prepare') {
    prepare(message);
    process.send!({ type: 'prepared', count: prepared.length });
  } else if (message.type === 'run') {
    void run(message).then((result) => process.send!(result));
  } else {
    process.exit(0);
  }
});
process.on('disconnect', () => process.exit(0));
