/**
 * The service's periodic replay (STRIPE_REPLAY_INTERVAL_SECONDS), with two real service processes on one
 * database and the local Stripe: one replica replays at a time, missed events heal by themselves, a Stripe
 * failure is logged and retried without harming the service, and SIGTERM stops it cleanly.
 */
import { startLocalStripe, type LocalStripe } from '../../localStripe';
import { replayLockKey } from '../replay/periodicReplay';
import { startServiceProcess, waitUntil, type ServiceProcess } from './support/serviceProcess';
import { checkoutSession, stripeEvent, unixSeconds } from './support/stripeFixtures';
import { balanceOf, checkInvariants, invariantsHold } from './support/invariants';
import { testWebhookSecret } from './support/testApp';
import { createTestDatabase, type TestDatabase } from './support/testDatabase';
import { holdEventOnLock } from './support/advisoryLock';

let database: TestDatabase;
let local: LocalStripe;

beforeAll(async () => {
  database = await createTestDatabase();
  local = await startLocalStripe();
});
afterAll(async () => {
  await local.close();
  await database.drop();
});

const purchase = (userId: string, credits: number) =>
  stripeEvent('checkout.session.completed', checkoutSession({ client_reference_id: userId, metadata: { credits: String(credits) } }), { created: unixSeconds() - 5 });

function replica(name: string): Promise<ServiceProcess> {
  return startServiceProcess({
    name,
    databaseUrl: database.url,
    webhookSecret: testWebhookSecret,
    logLevel: 'debug',
    env: { STRIPE_API_KEY: 'sk_test_periodic_replay', STRIPE_API_BASE: local.baseUrl, STRIPE_MODE: 'test', STRIPE_REPLAY_INTERVAL_SECONDS: '1' },
  });
}

const logged = (service: ServiceProcess, message: string) => service.logLines.filter((line) => line.includes(`"msg":"${message}`)).length;

async function replayLockHolders(): Promise<number> {
  const { rows } = await database.db.query<{ holders: number }>(
    "SELECT count(*)::int AS holders FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = 0 AND objid = $1 AND objsubid = 1",
    [replayLockKey],
  );
  return rows[0]!.holders;
}

test('two replicas with periodic replay on one database: one replays at a time, the other skips its turns, and every missed event is applied once', async () => {
  // The first missed event's transaction waits on a lock this test holds: whichever replica replays is held
  // inside it, with the replay lock, for as long as the test wants.
  const held = purchase('user_periodic_held', 10);
  const lockKey = 0x7e57_13;
  const lock = await holdEventOnLock(database.db, held.id, lockKey);
  local.addEvent(held);

  const [first, second] = await Promise.all([replica('replica A'), replica('replica B')]);
  const waitingInsideEvent = async () =>
    (await database.db.query("SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO stripe_events%'")).rowCount;
  await waitUntil(async () => (await waitingInsideEvent()) === 1, 30_000, 'a replica to replay and be held inside the first event');
  // While it is held, the other one tries its turn every second and skips it: a few turns, never a second replay.
  const skipsBefore = logged(first, 'periodic replay skipped') + logged(second, 'periodic replay skipped');
  await waitUntil(() => logged(first, 'periodic replay skipped') + logged(second, 'periodic replay skipped') >= skipsBefore + 3, 30_000, 'the other replica to skip three turns');
  expect(await replayLockHolders()).toBe(1);
  expect(await waitingInsideEvent()).toBe(1);
  const skippers = [first, second].filter((service) => logged(service, 'periodic replay skipped') > 0);
  expect(skippers).toHaveLength(1);

  lock.release();
  await lock.done;
  await lock.unhold();
  await waitUntil(async () => (await balanceOf(database.db, 'user_periodic_held')).purchased === 10, 30_000, 'the held event to be applied');

  // A delivery that never came heals by itself, whichever replica's turn it is.
  const missed = purchase('user_periodic_missed', 7);
  local.addEvent(missed);
  await waitUntil(async () => (await balanceOf(database.db, 'user_periodic_missed')).purchased === 7, 30_000, 'the missed event to be applied by a periodic replay');
  const finishedBefore = logged(first, 'periodic replay finished') + logged(second, 'periodic replay finished');
  await waitUntil(() => logged(first, 'periodic replay finished') + logged(second, 'periodic replay finished') >= finishedBefore + 2, 30_000, 'two more replays');
  expect(await balanceOf(database.db, 'user_periodic_held')).toEqual({ purchased: 10, subscription: 0 });
  expect(await balanceOf(database.db, 'user_periodic_missed')).toEqual({ purchased: 7, subscription: 0 });
  expect(await checkInvariants(database.db)).toEqual(invariantsHold);
  const { rows } = await database.db.query<{ event_id: string }>('SELECT event_id FROM replay_cursor WHERE livemode = false');
  expect(rows).toEqual([{ event_id: missed.id }]);

  // Stripe failing is logged, the service keeps serving, and the next turn succeeds.
  local.failNext(3, 500); // stripe-node's own two retries included: one whole turn fails
  await waitUntil(() => logged(first, 'periodic replay failed') + logged(second, 'periodic replay failed') >= 1, 30_000, 'a replay to fail on Stripe');
  const afterFailure = purchase('user_periodic_after_failure', 3);
  local.addEvent(afterFailure);
  await waitUntil(async () => (await balanceOf(database.db, 'user_periodic_after_failure')).purchased === 3, 30_000, 'the next turn to apply what came after the failure');
  for (const service of [first, second]) expect((await fetch(`${service.url}/readyz`)).status).toBe(200);

  // SIGTERM: both stop cleanly (exit 0), the replay timer included.
  const exits = await Promise.all([first.stop(), second.stop()]);
  expect(exits).toEqual([
    { code: 0, signal: null },
    { code: 0, signal: null },
  ]);
  expect(await replayLockHolders()).toBe(0);
}, 120_000);
