/** `npm run send-test-event` against a real running service: what a newcomer sees for each kind of answer. */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { freePort } from '../../service/freePort';
import { runScript, type ScriptRun } from '../../service/test/support/scriptProcess';
import { startServiceProcess, type ServiceProcess } from '../../service/test/support/serviceProcess';
import { createTestDatabase, type TestDatabase } from '../../service/test/support/testDatabase';

const webhookSecret = 'whsec_send_test_event_0123456789abcdef';
const jwtSecret = 'send-test-event-session-key-0123456789abcdef';

let database: TestDatabase;
let service: ServiceProcess;
let dataDir: string;

beforeAll(async () => {
  database = await createTestDatabase();
  dataDir = await mkdtemp(path.join(os.tmpdir(), 'send-test-event-'));
  service = await startServiceProcess({ databaseUrl: database.url, webhookSecret, env: { AUTH_JWT_SECRET: jwtSecret }, fromSources: true, name: 'service for send-test-event' });
}, 60_000);
afterAll(async () => {
  await service?.stop();
  await database?.drop();
  await rm(dataDir, { recursive: true, force: true });
});

/** Runs the script as `npm run send-test-event` does, with the settings a developer's shell would have. */
function sendTestEvent(args: string[], env: Record<string, string> = {}): Promise<ScriptRun> {
  const settings = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? os.tmpdir(), DATA_DIR: dataDir, STRIPE_WEBHOOK_SECRET: webhookSecret, AUTH_JWT_SECRET: jwtSecret, ...env };
  return runScript('scripts/send-test-event.ts', args, settings);
}

const toService = () => ['--url', service.url];
const eventCount = async () => (await database.db.query<{ count: number }>('SELECT count(*)::int AS count FROM stripe_events')).rows[0]!.count;

test('a paid purchase shows the balance before and after, and a refund of its payment takes the credits back', async () => {
  const paid = await sendTestEvent([...toService(), '--user', 'user_paid', '--credits', '250']);

  expect(paid.code).toBe(0);
  expect(paid.stdout).toContain('before: user_paid has 0 credits (0 purchased, 0 subscription)');
  expect(paid.stdout).toMatch(/sent checkout\.session\.completed evt_\w+ \(test mode\)/);
  expect(paid.stdout).toContain('applied (processed)');
  expect(paid.stdout).toContain('after: user_paid has 250 credits (250 purchased, 0 subscription)');

  const paymentIntent = /--type refund --payment-intent (pi_\w+)/.exec(paid.stdout)?.[1];
  expect(paymentIntent).toBeDefined();
  const refunded = await sendTestEvent([...toService(), '--user', 'user_paid', '--type', 'refund', '--payment-intent', paymentIntent!]);
  expect(refunded.stdout).toContain('sent charge.refunded');
  expect(refunded.stdout).toContain('after: user_paid has 0 credits');
});

test('a delayed payment grants nothing until its session succeeds', async () => {
  const unpaid = await sendTestEvent([...toService(), '--user', 'user_delayed', '--type', 'unpaid', '--credits', '40']);
  expect(unpaid.stdout).toContain('after: user_delayed has 0 credits');
  const session = /--session (cs_test_\w+)/.exec(unpaid.stdout)?.[1];
  expect(session).toBeDefined();

  const settled = await sendTestEvent([...toService(), '--user', 'user_delayed', '--type', 'async-succeeded', '--session', session!, '--credits', '40']);
  expect(settled.stdout).toContain('sent checkout.session.async_payment_succeeded');
  expect(settled.stdout).toContain('after: user_delayed has 40 credits (40 purchased, 0 subscription)');
});

test('a subscription created grants its plan once its invoice is paid, and deleted lets its credits expire', async () => {
  const created = await sendTestEvent([...toService(), '--user', 'user_plan', '--type', 'subscription-created', '--credits', '300']);
  expect(created.stdout).toContain('after: user_plan has 0 credits');
  const paid = await sendTestEvent([...toService(), '--user', 'user_plan', '--type', 'invoice-paid', '--credits', '300']);
  expect(paid.stdout).toContain('after: user_plan has 300 credits (0 purchased, 300 subscription)');

  const deleted = await sendTestEvent([...toService(), '--user', 'user_plan', '--type', 'subscription-deleted', '--credits', '300']);
  expect(deleted.stdout).toContain('sent customer.subscription.deleted');
  expect(deleted.stdout).toContain('after: user_plan has 0 credits');
});

test('a dispute of a payment that bought nothing is answered "unmatched", and the script says it was not applied', async () => {
  const run = await sendTestEvent([...toService(), '--user', 'user_unmatched', '--type', 'dispute']);

  expect(run.code).toBe(0);
  expect(run.stdout).toContain('not applied: the service could not attribute it');
});

test('an event the service refuses is "not applied", with the status and the reason it gave', async () => {
  const before = await eventCount();
  const run = await sendTestEvent([...toService(), '--user', 'user_refused', '--credits', '500'], { STRIPE_WEBHOOK_SECRET: 'whsec_not_the_service_secret' });

  expect(run.code).toBe(1);
  expect(run.stdout).toContain('not applied (HTTP 400: No signature matches a configured webhook secret');
  expect(run.stdout).not.toContain('after:');
  expect(await eventCount()).toBe(before);
});

test('with the service down it names the address and asks whether npm start is running', async () => {
  const nobodyThere = `http://127.0.0.1:${await freePort()}`;
  const run = await sendTestEvent(['--url', nobodyThere]);

  expect(run.code).toBe(1);
  expect(run.stderr.trim()).toBe(`cannot reach ${nobodyThere} — is \`npm start\` running?`);
});

test('without a session key it reads the balance from the database the service uses', async () => {
  const run = await sendTestEvent([...toService(), '--user', 'user_db', '--credits', '7'], { AUTH_JWT_SECRET: '', DATABASE_URL: database.url });

  expect(run.stdout).toContain('before: user_db has 0 credits');
  expect(run.stdout).toContain('after: user_db has 7 credits');
});

test('--help prints the usage and sends nothing; an unknown option is a usage error', async () => {
  const before = await eventCount();
  const help = await sendTestEvent([...toService(), '--help']);
  expect(help.code).toBe(0);
  expect(help.stdout).toMatch(/^Usage: npm run send-test-event/);
  expect(help.stdout).toContain('subscription-deleted');
  expect(await eventCount()).toBe(before);

  const unknown = await sendTestEvent(['--colour', 'red']);
  expect(unknown.code).toBe(2);
  expect(unknown.stderr).toContain("Unknown option '--colour'");
  expect(unknown.stderr).toContain('Usage: npm run send-test-event');
});
