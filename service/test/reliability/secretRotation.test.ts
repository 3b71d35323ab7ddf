/**
 * Secret rotation under load: the secrets file goes old → old+new → new while deliveries signed with the
 * old secret, the new one and both keep flowing. A delivery is judged against the secrets that were in
 * force during the whole time it was in flight: none that should be accepted may be rejected, and none
 * that should be rejected may be applied.
 */
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fingerprintSecret } from '../../webhook/secretFingerprint';
import { checkDeliveryInvariants, deliveryInvariantsHold } from '../support/deliveryInvariants';
import { findLogLeaks } from '../support/logScan';
import { allServiceLogLines, startServiceProcess, stopAllServiceProcesses, waitUntil, type ServiceProcess } from '../support/serviceProcess';
import { postSigned } from '../support/stripeSender';
import { checkoutSession, stripeEvent } from '../support/stripeFixtures';
import { createTestDatabase, type TestDatabase } from '../support/testDatabase';
import { newFigures, reportFigures } from './figures';

const oldSecret = 'whsec_rotation_old_0f1e2d3c4b5a69788796a5b4c3d2e1f0';
const newSecret = 'whsec_rotation_new_a1b2c3d4e5f60718293a4b5c6d7e8f90';
const figures = newFigures();
const deliveriesPerPhase = 120;
const senders = 8;
const reloadDeadlineMillis = 10_000;

let database: TestDatabase;
let service: ServiceProcess;
let dir: string;
let secretFile: string;

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'rotation-'));
  secretFile = path.join(dir, 'stripe_webhook_secret');
  await writeFile(secretFile, `${oldSecret}\n`, { mode: 0o600 });
  database = await createTestDatabase();
  service = await startServiceProcess({ databaseUrl: database.url, webhookSecretFile: secretFile, name: 'rotating service' });
});
afterAll(async () => {
  await stopAllServiceProcesses();
  await database?.drop();
  await rm(dir, { recursive: true, force: true });
  reportFigures('secretRotation', figures);
});

/** As operators and orchestrators do it: write a temporary file, then rename it over the old one. */
async function replaceAtomically(content: string): Promise<void> {
  const temporary = `${secretFile}.tmp-${process.hrtime.bigint()}`;
  await writeFile(temporary, content, { mode: 0o600 });
  await rename(temporary, secretFile);
}

type Secret = 'old' | 'new';
const values: Record<Secret, string> = { old: oldSecret, new: newSecret };

/** What is certainly in force, and what may be in force, during one stretch of the rotation. */
interface Epoch {
  certain: Secret[];
  possible: Secret[];
}

interface Delivery {
  signers: Secret[];
  firstEpoch: number;
  lastEpoch: number;
  status: number;
  eventId: string;
}

test('no delivery is rejected that a secret in force for its whole flight signed, and none signed only by retired secrets is applied', async () => {
  figures.scenarios++;
  const epochs: Epoch[] = [{ certain: ['old'], possible: ['old'] }];
  const deliveries: Delivery[] = [];
  let flowing = true;
  const signerChoices: Secret[][] = [['old'], ['new'], ['old', 'new']];

  const sender = async (index: number) => {
    for (let i = 0; flowing && i < 10_000; i++) {
      const signers = signerChoices[(index + i) % signerChoices.length]!;
      const event = stripeEvent('checkout.session.completed', checkoutSession({ client_reference_id: `user_rotation_${index}`, metadata: { credits: '1' } }));
      const firstEpoch = epochs.length - 1;
      const answer = await postSigned(service.webhookUrl, event, signers.map((s) => values[s]));
      figures.deliveriesSent++;
      deliveries.push({ signers, firstEpoch, lastEpoch: epochs.length - 1, status: answer.status, eventId: event.id });
    }
  };
  const flow = Promise.all(Array.from({ length: senders }, (_, index) => sender(index)));

  const rotateTo = async (secrets: Secret[]) => {
    const before = epochs[epochs.length - 1]!;
    await waitUntil(() => deliveries.length >= deliveriesPerPhase * epochs.length, 30_000, 'deliveries in this phase');
    // From the moment the file changes until the service says it reloaded, either set may be in force.
    epochs.push({ certain: before.certain.filter((s) => secrets.includes(s)), possible: [...new Set([...before.possible, ...secrets])] });
    await replaceAtomically(`${secrets.map((s) => values[s]).join('\n')}\n`);
    figures.faultsInjected++;
    const fingerprints = JSON.stringify(secrets.map((s) => fingerprintSecret(values[s])));
    await service.waitForLog((line) => line.includes('webhook signing secrets reloaded') && line.includes(`"fingerprints":${fingerprints}`), reloadDeadlineMillis);
    epochs.push({ certain: secrets, possible: secrets });
  };
  await rotateTo(['old', 'new']);
  await rotateTo(['new']);
  await waitUntil(() => deliveries.length >= deliveriesPerPhase * epochs.length, 30_000, 'deliveries after the rotation');
  flowing = false;
  await flow;

  const span = (d: Delivery) => epochs.slice(d.firstEpoch, d.lastEpoch + 1);
  const mustAccept = deliveries.filter((d) => span(d).every((epoch) => d.signers.some((s) => epoch.certain.includes(s))));
  const mustReject = deliveries.filter((d) => span(d).every((epoch) => !d.signers.some((s) => epoch.possible.includes(s))));
  expect(mustAccept.filter((d) => d.status !== 200)).toEqual([]);
  expect(mustReject.filter((d) => d.status !== 400)).toEqual([]);
  // Each kind of signature was judged in each stable phase (the test would prove little otherwise).
  for (const stable of [0, 2, 4]) {
    for (const signers of signerChoices) {
      expect(deliveries.filter((d) => d.firstEpoch === stable && d.lastEpoch === stable && d.signers.join() === signers.join()).length).toBeGreaterThan(0);
    }
  }
  expect(mustReject.length).toBeGreaterThan(0);

  const accepted = deliveries.filter((d) => d.status === 200).map((d) => d.eventId);
  const rejected = deliveries.filter((d) => d.status === 400).map((d) => d.eventId);
  const { rows } = await database.db.query('SELECT id FROM stripe_events WHERE id = ANY($1)', [rejected]);
  expect(rows).toEqual([]);
  expect(await checkDeliveryInvariants(database.db, { acknowledged: accepted })).toEqual(deliveryInvariantsHold);
  figures.invariantChecks++;
  process.stdout.write(
    `\nsecretRotation: ${deliveries.length} deliveries, ${mustAccept.length} had to be accepted, ${mustReject.length} had to be rejected, ` +
      `${deliveries.length - mustAccept.length - mustReject.length} signed only with a secret being added or retired while in flight\n`,
  );
});

test('no log line of the rotating service carries either secret or a signature', () => {
  expect(allServiceLogLines().length).toBeGreaterThan(100);
  expect(findLogLeaks(allServiceLogLines(), [oldSecret, newSecret])).toEqual([]);
  figures.invariantChecks++;
});
