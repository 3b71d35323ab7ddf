/**
 * The signed-in user's own credits: GET /api/v1/billing/credits, its Server-Sent Events stream (opened with
 * the Authorization header or a single-use ticket), which follows balance changes made by this instance and,
 * through PostgreSQL NOTIFY, by any other instance on the same database.
 */
import { randomUUID } from 'node:crypto';
import { SignJWT } from 'jose';
import { connectDatabase, type Database } from '../db';
import { createLogger } from '../logger';
import { atTime, maxTimerDelayMillis } from '../users/balanceStream';
import { listenForBalanceChanges } from '../users/balanceChanges';
import { checkInvariants, invariantsHold } from './support/invariants';
import { waitUntil } from './support/serviceProcess';
import { StreamClient } from './support/streamClient';
import { checkoutSession, stripeEvent } from './support/stripeFixtures';
import { deliver, startTestApp, type TestApp } from './support/testApp';
import { createTestDatabase, type TestDatabase } from './support/testDatabase';

const jwtSecret = 'user-routes-test-secret-0123456789abcdef';
const jwtKey = new TextEncoder().encode(jwtSecret);
const sessionTokens = { key: { kind: 'secret' as const, secret: jwtSecret } };
const creditsPath = '/api/v1/billing/credits';
const streamPath = '/api/v1/billing/credits/stream';
const ticketPath = '/api/v1/billing/credits/stream-ticket';
/** The bound for a change made on one replica to reach a stream on another. */
const acrossReplicasMillis = 1_000;

let database: TestDatabase;
/** The instance users talk to; its notifier hears only its own webhook deliveries. */
let app: TestApp;
/** A second instance on its own pool, listening for other replicas' changes like service/main.ts wires every replica. */
let replica: TestApp;
let replicaDb: Database;
let stopReplicaListening: () => Promise<void>;
let withoutSessions: TestApp;

beforeAll(async () => {
  database = await createTestDatabase();
  app = await startTestApp(database.db, { sessionTokens });
  replicaDb = connectDatabase({ connectionString: database.url, poolMax: 5, logger: createLogger('silent') });
  replica = await startTestApp(replicaDb, { sessionTokens });
  stopReplicaListening = await listenForBalanceChanges(replicaDb, replica.app.balanceChanges);
  withoutSessions = await startTestApp(database.db);
});
afterAll(async () => {
  await stopReplicaListening();
  await Promise.all([app.close(), replica.close(), withoutSessions.close()]);
  await replicaDb.close();
  await database.drop();
});

const newUser = () => `user_${randomUUID()}`;

async function tokenFor(userId: string, options: { expiresAt?: number | string } = {}): Promise<string> {
  return new SignJWT({})
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject(userId)
    .setIssuedAt()
    .setExpirationTime(options.expiresAt ?? '10m')
    .sign(jwtKey);
}

async function buyCredits(userId: string, credits: number, webhookUrl = app.webhookUrl): Promise<void> {
  const response = await deliver(webhookUrl, stripeEvent('checkout.session.completed', checkoutSession({ client_reference_id: userId, metadata: { credits: String(credits) } })));
  expect(response.body.status).toBe('processed');
}

async function getCredits(base: string, headers: Record<string, string> = {}, query = '') {
  const response = await fetch(`${base}${creditsPath}${query}`, { headers });
  return { status: response.status, headers: response.headers, body: (await response.json()) as Record<string, unknown> };
}

async function ticketFor(base: string, userId: string): Promise<{ ticket: string; expires_at: string }> {
  const response = await fetch(`${base}${ticketPath}`, { method: 'POST', headers: { authorization: `Bearer ${await tokenFor(userId)}` } });
  expect(response.status).toBe(201);
  return (await response.json()) as { ticket: string; expires_at: string };
}

describe('GET /api/v1/billing/credits', () => {
  test('a valid session token returns the user’s own credits in snake_case, never cached', async () => {
    const user = newUser();
    await buyCredits(user, 500);
    const response = await getCredits(app.url, { Authorization: `Bearer ${await tokenFor(user)}` });
    expect(response.status).toBe(200);
    expect(response.headers.get('cache-control')).toBe('no-store');
    expect(response.body).toEqual({
      user_id: user,
      credits_remaining: 0,
      purchased_credits_balance: 500,
      total_credits: 500,
      plan: null,
      subscription_status: null,
      current_period_end: null,
      pending_purchases: [],
    });
  });

  test('another user’s token sees only that user’s credits, whatever the request names', async () => {
    const owner = newUser();
    const other = newUser();
    await buyCredits(owner, 700);
    const otherToken = await tokenFor(other);
    const { ticket } = await ticketFor(app.url, owner);
    for (const query of ['', `?user_id=${owner}`, `?sub=${owner}`, `?access_token=${await tokenFor(owner)}`, `?ticket=${ticket}`]) {
      const response = await getCredits(app.url, { Authorization: `Bearer ${otherToken}`, 'X-User-Id': owner }, query);
      expect(response.status).toBe(200);
      expect(response.body).toMatchObject({ user_id: other, purchased_credits_balance: 0, total_credits: 0 });
      expect(JSON.stringify(response.body)).not.toContain(owner);
    }
  });

  test('a missing token is refused with 401 naming the Bearer scheme', async () => {
    const response = await getCredits(app.url);
    expect(response.status).toBe(401);
    expect(response.headers.get('www-authenticate')).toBe('Bearer realm="billing"');
    expect(response.body.user_id).toBeUndefined();
  });

  test('the JSON route does not take ?access_token= or ?ticket= (only the Authorization header)', async () => {
    expect((await getCredits(app.url, {}, `?access_token=${await tokenFor(newUser())}`)).status).toBe(401);
    const { ticket } = await ticketFor(app.url, newUser());
    expect((await getCredits(app.url, {}, `?ticket=${ticket}`)).status).toBe(401);
  });

  test('without session settings the user routes do not exist (404)', async () => {
    const token = await tokenFor(newUser());
    expect((await fetch(`${withoutSessions.url}${creditsPath}`, { headers: { Authorization: `Bearer ${token}` } })).status).toBe(404);
    expect((await fetch(`${withoutSessions.url}${ticketPath}`, { method: 'POST', headers: { Authorization: `Bearer ${token}` } })).status).toBe(404);
  });
});

describe('stream tickets', () => {
  test('a ticket is random, lives 60 s, and only its hash is stored', async () => {
    const before = Date.now();
    const first = await ticketFor(app.url, newUser());
    const second = await ticketFor(app.url, newUser());
    expect(first.ticket).not.toBe(second.ticket);
    expect(first.ticket.length).toBeGreaterThanOrEqual(43);
    const lifetimeMillis = Date.parse(first.expires_at) - before;
    expect(lifetimeMillis).toBeGreaterThan(55_000);
    expect(lifetimeMillis).toBeLessThanOrEqual(61_000);
    const { rows } = await database.db.query<{ dump: string }>('SELECT string_agg(encode(ticket_hash, \'escape\') || user_id, \',\') AS dump FROM stream_tickets');
    expect(rows[0]?.dump).not.toContain(first.ticket);
  });

  test('a ticket made on one replica opens the stream on another, once', async () => {
    const user = newUser();
    await buyCredits(user, 15);
    const { ticket } = await ticketFor(app.url, user);
    const stream = await StreamClient.open(`${replica.url}${streamPath}?ticket=${encodeURIComponent(ticket)}`);
    try {
      expect(stream.response.status).toBe(200);
      expect(await stream.nextBalance()).toMatchObject({ user_id: user, purchased_credits_balance: 15 });
    } finally {
      stream.close();
    }
    for (const base of [app.url, replica.url]) {
      const again = await fetch(`${base}${streamPath}?ticket=${encodeURIComponent(ticket)}`);
      expect(again.status).toBe(401);
      expect(again.headers.get('www-authenticate')).toBe('Bearer realm="billing", error="invalid_token"');
      expect(((await again.json()) as { error: string }).error).toBe('invalid_ticket');
    }
  });

  test('two replicas redeeming the same ticket at once open one stream between them', async () => {
    const { ticket } = await ticketFor(app.url, newUser());
    const controllers = [new AbortController(), new AbortController()];
    const answers = await Promise.all(
      [app.url, replica.url].map((base, i) => fetch(`${base}${streamPath}?ticket=${ticket}`, { signal: controllers[i]!.signal })),
    );
    expect(answers.map((answer) => answer.status).sort()).toEqual([200, 401]);
    controllers.forEach((controller) => controller.abort());
    await waitUntil(() => app.app.notifier.openStreams + replica.app.notifier.openStreams === 0, 5_000, 'the stream to close');
  });

  test('an expired, unknown or empty ticket, or an old ?access_token=, gets 401 instead of a stream', async () => {
    const { ticket: expired } = await ticketFor(app.url, newUser());
    await database.db.query("UPDATE stream_tickets SET expires_at = now() - interval '1 second'");
    for (const query of [`?ticket=${expired}`, `?ticket=${'A'.repeat(43)}`, '?ticket=', `?access_token=${await tokenFor(newUser())}`, '']) {
      const response = await fetch(`${app.url}${streamPath}${query}`);
      expect({ query, status: response.status }).toEqual({ query, status: 401 });
      expect(response.headers.get('content-type')).not.toContain('text/event-stream');
      await response.text();
    }
  });

  test('a ticket is made only for a valid session', async () => {
    const missing = await fetch(`${app.url}${ticketPath}`, { method: 'POST' });
    expect(missing.status).toBe(401);
    const expired = await fetch(`${app.url}${ticketPath}`, { method: 'POST', headers: { authorization: `Bearer ${await tokenFor(newUser(), { expiresAt: Math.floor(Date.now() / 1000) - 120 })}` } });
    expect(expired.status).toBe(401);
  });
});

describe('GET /api/v1/billing/credits/stream', () => {
  test('sends the current credits at once, then new credits when a webhook credits the user', async () => {
    const user = newUser();
    await buyCredits(user, 40);
    const stream = await StreamClient.open(`${app.url}${streamPath}`, { Authorization: `Bearer ${await tokenFor(user)}` });
    try {
      expect(stream.response.status).toBe(200);
      expect(stream.response.headers.get('content-type')).toBe('text/event-stream');
      expect(await stream.nextBalance()).toMatchObject({ user_id: user, purchased_credits_balance: 40, total_credits: 40, pending_purchases: [] });

      await buyCredits(user, 60);
      expect(await stream.nextBalance()).toMatchObject({ user_id: user, purchased_credits_balance: 100, total_credits: 100 });
    } finally {
      stream.close();
    }
  });

  test('a change made through one replica reaches a stream on another within 1 s', async () => {
    const user = newUser();
    const { ticket } = await ticketFor(app.url, user);
    const stream = await StreamClient.open(`${replica.url}${streamPath}?ticket=${ticket}`);
    try {
      expect(await stream.nextBalance()).toMatchObject({ user_id: user, purchased_credits_balance: 0 });
      await buyCredits(user, 250, app.webhookUrl);
      expect(await stream.nextBalance(acrossReplicasMillis)).toMatchObject({ user_id: user, purchased_credits_balance: 250, total_credits: 250 });
    } finally {
      stream.close();
    }
  });

  test('another user’s balance changes never reach this user’s stream, whichever ticket or header opened it', async () => {
    const user = newUser();
    const other = newUser();
    const { ticket: othersTicket } = await ticketFor(app.url, other);
    // The header wins over a ticket in the query: the stream is the header's user's.
    const stream = await StreamClient.open(`${replica.url}${streamPath}?ticket=${othersTicket}`, { Authorization: `Bearer ${await tokenFor(user)}` });
    try {
      expect(await stream.nextBalance()).toMatchObject({ user_id: user });
      await buyCredits(other, 999, app.webhookUrl);
      await buyCredits(other, 1, replica.webhookUrl);
      await buyCredits(user, 3, app.webhookUrl);
      // Events arrive in order: had the other user's changes been sent, they would come before this one.
      expect(await stream.nextBalance()).toEqual(expect.objectContaining({ user_id: user, purchased_credits_balance: 3 }));
      expect(stream.unread.map((message) => message.data).join()).not.toContain(other);
    } finally {
      stream.close();
    }
  });

  test('the stream ends when the session that opened it expires, also when opened with a ticket', async () => {
    const user = newUser();
    const expiresAt = Math.floor(Date.now() / 1000) + 2;
    const byHeader = await StreamClient.open(`${app.url}${streamPath}`, { authorization: `Bearer ${await tokenFor(user, { expiresAt })}` });
    const ticketResponse = await fetch(`${app.url}${ticketPath}`, { method: 'POST', headers: { authorization: `Bearer ${await tokenFor(user, { expiresAt })}` } });
    const { ticket, expires_at } = (await ticketResponse.json()) as { ticket: string; expires_at: string };
    // A ticket never outlives the session it was made for.
    expect(Date.parse(expires_at)).toBeLessThanOrEqual(expiresAt * 1000);
    const byTicket = await StreamClient.open(`${replica.url}${streamPath}?ticket=${ticket}`);
    try {
      for (const stream of [byHeader, byTicket]) {
        await stream.nextBalance();
        await expect(stream.next(10_000)).rejects.toThrow('stream ended');
      }
    } finally {
      byHeader.close();
      byTicket.close();
    }
  });

  test('a session longer than setTimeout can hold (24.8 days) keeps its stream open', async () => {
    const user = newUser();
    const thirtyDays = Math.floor(Date.now() / 1000) + 30 * 86_400;
    const stream = await StreamClient.open(`${app.url}${streamPath}`, { authorization: `Bearer ${await tokenFor(user, { expiresAt: thirtyDays })}` });
    try {
      await stream.nextBalance();
      await buyCredits(user, 9);
      // Had the expiry timer overflowed, the stream would have ended after 1 ms and missed this change.
      expect(await stream.nextBalance()).toMatchObject({ purchased_credits_balance: 9 });
    } finally {
      stream.close();
    }
  });

  test('a client that disconnects leaves no stream open on the server', async () => {
    // Streams of the tests before may still be closing: start from none.
    await waitUntil(() => app.app.notifier.openStreams === 0, 5_000, 'earlier streams to close');
    const before = app.app.notifier.openStreams;
    const stream = await StreamClient.open(`${app.url}${streamPath}`, { Authorization: `Bearer ${await tokenFor(newUser())}` });
    try {
      await stream.nextBalance();
      expect(app.app.notifier.openStreams).toBe(before + 1);
    } finally {
      stream.close();
    }
    await waitUntil(() => app.app.notifier.openStreams === before, 5_000, 'the stream to be closed on the server');
  });

  test('a client that closes its stream is normal: no error is logged', async () => {
    const own = await startTestApp(database.db, { sessionTokens });
    try {
      const stream = await StreamClient.open(`${own.url}${streamPath}`, { Authorization: `Bearer ${await tokenFor(newUser())}` });
      await stream.nextBalance();
      stream.close();
      // The server notices the disconnect when its pipe to the socket fails: wait for what it logs then.
      await waitUntil(
        () => own.logLines.some((line) => line.includes('client closed the connection') || (JSON.parse(line) as { level: number }).level >= 50),
        5_000,
        'the disconnect to be noticed',
      );
      expect(own.logLines.filter((line) => (JSON.parse(line) as { level: number }).level >= 50)).toEqual([]);
    } finally {
      await own.close();
    }
  });
});

describe('the expiry timer of a stream', () => {
  afterEach(() => jest.useRealTimers());

  test('fires at its time even when that is further away than one timer can wait', () => {
    jest.useFakeTimers({ now: 0 });
    const fired = jest.fn();
    const thirtyDaysMillis = 30 * 86_400_000;
    atTime(thirtyDaysMillis, fired);
    jest.advanceTimersByTime(maxTimerDelayMillis);
    expect(fired).not.toHaveBeenCalled();
    jest.advanceTimersByTime(thirtyDaysMillis - maxTimerDelayMillis - 1);
    expect(fired).not.toHaveBeenCalled();
    jest.advanceTimersByTime(1);
    expect(fired).toHaveBeenCalledTimes(1);
  });

  test('can be cancelled, and fires at once for a time already past', () => {
    jest.useFakeTimers({ now: 1_000 });
    const cancelled = jest.fn();
    atTime(40 * 86_400_000, cancelled)();
    jest.advanceTimersByTime(41 * 86_400_000);
    expect(cancelled).not.toHaveBeenCalled();
    const past = jest.fn();
    atTime(500, past);
    expect(past).toHaveBeenCalledTimes(1);
  });
});

test('every balance equals its ledger, no session is granted twice, no grant lacks a paid purchase', async () => {
  // Every stream this file opened was closed.
  await waitUntil(() => app.app.notifier.openStreams + replica.app.notifier.openStreams === 0, 5_000, 'every stream to close');
  expect(await checkInvariants(database.db)).toEqual(invariantsHold);
});
