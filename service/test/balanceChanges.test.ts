/**
 * BalanceChanges: this process's streams hear a change at once; the other replicas hear the changes of a batch
 * in one notification, sent on a connection of its own after the commit (none inside a crediting transaction).
 */
import { startLocalStripe } from '../../localStripe';
import { emptyCatalog } from '../credits/catalog';
import { createLogger } from '../logger';
import { replayEvents } from '../replay/replayEvents';
import { createStripeClient } from '../stripeApi';
import { BalanceChanges, balanceChangesBatchMillis, balanceChangesChannel } from '../users/balanceChanges';
import { waitUntil } from './support/serviceProcess';
import { checkoutSession, stripeEvent, unixSeconds } from './support/stripeFixtures';
import { createTestDatabase, type TestDatabase } from './support/testDatabase';

let database: TestDatabase;
const heard: string[] = [];
let stopListening: () => Promise<void>;

beforeAll(async () => {
  database = await createTestDatabase({ poolMax: 2 });
  stopListening = await database.db.listen(balanceChangesChannel, (payload) => heard.push(payload));
});
afterAll(async () => {
  await stopListening();
  await database.drop();
});
beforeEach(() => {
  heard.length = 0;
});

const logger = createLogger('silent');

test('the changes of one batch go out as one notification naming each user once, and the own streams hear each at once', async () => {
  const changes = new BalanceChanges(database.db, logger);
  const local: string[] = [];
  for (const user of ['u1', 'u2', 'u3']) changes.notifier.subscribe(user, () => local.push(user));
  for (let i = 0; i < 30; i++) changes.changed(`u${(i % 3) + 1}`);
  expect(local).toHaveLength(30);
  await waitUntil(() => heard.length > 0, 2_000, 'the notification');
  // Nothing else follows within a few batches.
  await new Promise((resolve) => setTimeout(resolve, 4 * balanceChangesBatchMillis));
  expect(heard.map((payload) => JSON.parse(payload) as unknown)).toEqual([{ from: changes.processId, users: ['u1', 'u2', 'u3'] }]);
});

test('a batch too long for one NOTIFY payload is split, and every user is named', async () => {
  const changes = new BalanceChanges(database.db, logger);
  const users = Array.from({ length: 200 }, (_, i) => `user_${i}_${'x'.repeat(100)}`);
  for (const user of users) changes.changed(user);
  await changes.flush();
  const named = () => heard.flatMap((payload) => (JSON.parse(payload) as { users: string[] }).users);
  await waitUntil(() => named().length >= users.length, 2_000, 'the notifications');
  expect(heard.length).toBeGreaterThan(1);
  expect(named().sort()).toEqual([...users].sort());
});

test("a replica's notification reaches this process's streams, its own echo does not reach them twice", () => {
  const changes = new BalanceChanges(database.db, logger);
  const local: string[] = [];
  changes.notifier.subscribe('u1', () => local.push('u1'));
  changes.received(JSON.stringify({ from: 'another-process', users: ['u1', 'u2'] }));
  changes.received(JSON.stringify({ from: changes.processId, users: ['u1'] }));
  // A replica of the previous version, during a rolling update, sends one bare user id.
  changes.received('u1');
  expect(local).toEqual(['u1', 'u1']);
});

test("an event the replay applies tells the replicas' streams, as a delivered one does", async () => {
  const fake = await startLocalStripe();
  try {
    const user = `user_replayed_${Date.now()}`;
    fake.addEvent(stripeEvent('checkout.session.completed', checkoutSession({ client_reference_id: user, metadata: { credits: '15' } })));
    const changes = new BalanceChanges(database.db, logger);
    const summary = await replayEvents({
      db: database.db,
      stripe: createStripeClient('sk_test_recovery', new URL(fake.baseUrl)),
      stripeMode: 'test',
      eventContext: { catalog: emptyCatalog(), fetchLineItems: undefined },
      start: { kind: 'since', sinceSeconds: unixSeconds() - 3600 },
      onBalanceChanged: (userId) => changes.changed(userId),
    });
    expect(summary).toMatchObject({ processed: 1 });
    await changes.flush();
    await waitUntil(() => heard.length > 0, 2_000, 'the notification');
    expect(heard.map((payload) => JSON.parse(payload) as unknown)).toEqual([{ from: changes.processId, users: [user] }]);
  } finally {
    await fake.close();
  }
});
