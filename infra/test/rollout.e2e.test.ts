/**
 * An image update, for real: Debian's nginx with the deployed config in front of service processes
 * (the built service, as in the image), their shared name resolved by a DNS server that, like Docker's,
 * lists a replica from the moment it starts until it has exited. The replicas are replaced following
 * `replicaRolloutPlan`, the plan infra/index.ts makes Pulumi follow (program.test.ts checks the two
 * agree), while signed deliveries flow through nginx the whole time.
 */
import https from 'node:https';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { checkDeliveryInvariants, deliveryInvariantsHold } from '../../service/test/support/deliveryInvariants';
import { balanceOf } from '../../service/test/support/invariants';
import { startServiceProcess, stopAllServiceProcesses, waitUntil, type ServiceProcess } from '../../service/test/support/serviceProcess';
import { checkoutSession, signedDelivery, stripeEvent } from '../../service/test/support/stripeFixtures';
import { createTestDatabase, type TestDatabase } from '../../service/test/support/testDatabase';
import { webhookPath } from '../../service/webhook/route';
import { configDefaults } from '../config';
import { healthcheck, replicaRolloutPlan, type RolloutStep } from '../rollout';
import { startDnsServer, type DnsServer } from './support/dnsServer';
import { startEdge, upstreamName, type RunningEdge } from './support/edge';
import { request } from './support/httpsClient';
import { freePort } from '../../service/test/support/freePort';

const replicaCount = 2;
const webhookSecret = 'whsec_rolloutSecretThroughNginx';
const senders = 4;
/** Deliveries each sender still makes after the last old replica has gone (nginx may hold its address a little longer). */
const deliveriesAfterRollout = 25;
/** Each sender, from an address of its own, stays well under the edge's per-address rate limit (it is not under test here). */
const senderIntervalMillis = 1000 / (configDefaults.webhookRateLimitPerSecond / 2);

interface Replica {
  host: string;
  process: ServiceProcess;
  startedAtMillis: number;
}

let database: TestDatabase;
let dns: DnsServer;
let running: RunningEdge | undefined;
let dir: string;
let port: number;
const oldHosts = Array.from({ length: replicaCount }, (_, index) => `127.0.0.${21 + index}`);
const newHosts = Array.from({ length: replicaCount }, (_, index) => `127.0.0.${31 + index}`);
/** The addresses Docker's DNS would answer: every replica container that is running. */
const inNetwork = new Set<string>();

async function startReplica(host: string): Promise<Replica> {
  inNetwork.add(host); // Docker adds a container to the network's DNS when it starts, before it is healthy
  dns.setAddresses([...inNetwork]);
  const startedAtMillis = Date.now();
  const process = await startServiceProcess({
    name: `replica ${host}`,
    databaseUrl: database.url,
    webhookSecret,
    host,
    port,
    stripeMode: 'test',
    env: { NODE_ENV: 'production', STRIPE_API_KEY: 'sk_test_rolloutKey' },
  });
  return { host, process, startedAtMillis };
}

/** What Docker (and so Pulumi's `wait`) calls healthy: /readyz answers 200 at a health check, the first one `interval` after start. */
async function waitHealthy(replica: Replica): Promise<void> {
  await waitUntil(
    async () => {
      if (Date.now() < replica.startedAtMillis + healthcheck.intervalSeconds * 1000) return false;
      const ready = await fetch(`http://${replica.host}:${port}/readyz`).catch(() => undefined);
      return ready?.status === 200;
    },
    (healthcheck.intervalSeconds + healthcheck.startPeriodSeconds) * 1000,
    `replica ${replica.host} healthy`,
  );
}

/** docker stop: SIGTERM, the service drains, exits; Docker then takes it off the network. */
async function stopReplica(replica: Replica): Promise<number | null> {
  const exit = await replica.process.stop();
  inNetwork.delete(replica.host);
  dns.setAddresses([...inNetwork]);
  return exit.code;
}

async function processedBy(host: string): Promise<number> {
  const text = await (await fetch(`http://${host}:${port}/metrics`)).text();
  const line = text.split('\n').find((entry) => entry.startsWith('stripe_webhook_events_total{type="checkout.session.completed",outcome="processed"}'));
  return line ? Number(line.split(' ').pop()) : 0;
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'rollout-e2e-'));
  database = await createTestDatabase();
  port = await freePort([...oldHosts, ...newHosts]);
  dns = await startDnsServer(upstreamName, []);
  running = await startEdge(dir, port, dns.address);
}, 120_000);

afterAll(async () => {
  await running?.nginx.stop();
  await stopAllServiceProcesses();
  await dns?.close();
  await database?.drop();
  rmSync(dir, { recursive: true, force: true });
});

test('replacing every replica one at a time while deliveries flow: no answer but 200, every acknowledged event applied once', async () => {
  const old = await Promise.all(oldHosts.map(startReplica));
  await Promise.all(old.map(waitHealthy));
  const edge = (running as RunningEdge).edge;

  // Deliveries through nginx, from the first step of the rollout to a while after its last.
  const agent = new https.Agent({ keepAlive: true, maxSockets: senders });
  const answers: Array<{ status: number; eventId: string; userId: string; credits: number }> = [];
  let rolloutDone = false;
  const sender = async (senderIndex: number) => {
    let afterRollout = 0;
    for (let sequence = 0; afterRollout < deliveriesAfterRollout; sequence++) {
      if (rolloutDone) afterRollout++;
      const pace = new Promise((resolve) => setTimeout(resolve, senderIntervalMillis));
      const userId = `user_rollout_${senderIndex}_${sequence % 5}`;
      const credits = 1 + (sequence % 3);
      const event = stripeEvent('checkout.session.completed', checkoutSession({ client_reference_id: userId, metadata: { credits: String(credits) } }));
      const delivery = signedDelivery(event, [webhookSecret]);
      const localAddress = `127.0.0.${41 + senderIndex}`;
      const reply = await request(edge, { method: 'POST', path: webhookPath, headers: delivery.headers, body: delivery.body, agent, localAddress }).catch(() => ({ status: 0 }));
      answers.push({ status: reply.status, eventId: event.id, userId, credits });
      await pace;
    }
  };
  const sending = Promise.all(Array.from({ length: senders }, (_, index) => sender(index)));

  const fresh: Replica[] = [];
  const exitCodes: Array<number | null> = [];
  const steps: RolloutStep[] = replicaRolloutPlan(replicaCount);
  for (const step of steps) {
    if (step.action === 'start') {
      const replica = await startReplica(newHosts[step.replica] as string);
      fresh[step.replica] = replica;
      await waitHealthy(replica);
    } else {
      exitCodes.push(await stopReplica(old[step.replica] as Replica));
    }
  }
  rolloutDone = true;
  await sending;
  agent.destroy();

  const statuses = new Map<number, number>();
  for (const answer of answers) statuses.set(answer.status, (statuses.get(answer.status) ?? 0) + 1);
  expect(Object.fromEntries(statuses)).toEqual({ 200: answers.length });
  expect(exitCodes).toEqual(Array(replicaCount).fill(0)); // each old replica drained and exited cleanly
  for (const replica of fresh) expect(await processedBy(replica.host)).toBeGreaterThan(0); // the new ones took over

  const acknowledged = answers.filter((answer) => answer.status === 200).map((answer) => answer.eventId);
  expect(await checkDeliveryInvariants(database.db, { acknowledged })).toEqual(deliveryInvariantsHold);
  const expected = new Map<string, number>();
  for (const answer of answers) expected.set(answer.userId, (expected.get(answer.userId) ?? 0) + answer.credits);
  for (const [userId, credits] of expected) expect({ userId, ...(await balanceOf(database.db, userId)) }).toEqual({ userId, purchased: credits, subscription: 0 });
  console.log(`rollout: ${answers.length} deliveries through nginx while ${replicaCount} replicas were replaced (${steps.length} steps), all 200`);
}, 180_000);
