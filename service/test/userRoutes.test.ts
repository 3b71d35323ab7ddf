/**
 * The signed-in user's own credits: GET /api/v1/billing/credits and its Server-Sent Events stream, which
 * follows balance changes made by this instance and, through PostgreSQL NOTIFY, by any other instance.
 */
import { randomUUID } from 'node:crypto';
import { base64url, SignJWT, UnsecuredJWT } from 'jose';
import { connectDatabase, type Database } from '../db';
import { createLogger } from '../logger';
import { checkInvariants, invariantsHold } from './support/invariants';
import { checkoutSession, stripeEvent } from './support/stripeFixtures';
import { deliver, startTestApp, type TestApp } from './support/testApp';
import { createTestDatabase, type TestDatabase } from './support/testDatabase';

const jwtSecret = 'user-routes-test-secret-0123456789abcdef';
const jwtKey = new TextEncoder().encode(jwtSecret);
const balancePath = '/api/v1/billing/credits';
const streamPath = '/api/v1/billing/credits/stream';
/** Upper bound on how long a balance change may take to reach a stream; the wait ends as soon as it does. */
const streamDeadlineMillis = 5_000;

let database: TestDatabase;
/** The instance users talk to; its notifier hears only its own webhook deliveries. */
let app: TestApp;
/** A second instance on its own pool, wired to PostgreSQL NOTIFY like service/main.ts wires every replica. */
let replica: TestApp;
let replicaDb: Database;
let stopReplicaListening: () => Promise<void>;
let withoutJwt: TestApp;

beforeAll(async () => {
  database = await createTestDatabase();
  app = await startTestApp(database.db, { jwtSecret });
  replicaDb = connectDatabase({ connectionString: database.url, poolMax: 5, logger: createLogger('silent') });
  replica = await startTestApp(replicaDb, { jwtSecret });
  stopReplicaListening = await replicaDb.listen('credit_balance_changed', (userId) => replica.app.notifier.notify(userId));
  withoutJwt = await startTestApp(database.db);
});
afterAll(async () => {
  await stopReplicaListening();
  await Promise.all([app.close(), replica.close(), withoutJwt.close()]);
  await replicaDb.close();
  await database.drop();
});

const newUser = () => `user_${randomUUID()}`;

async function tokenFor(userId: string, options: { expiresAt?: number; alg?: string; key?: Uint8Array } = {}): Promise<string> {
  return new SignJWT({})
    .setProtectedHeader({ alg: options.alg ?? 'HS256' })
    .setSubject(userId)
    .setIssuedAt()
    .setExpirationTime(options.expiresAt ?? '10m')
    .sign(options.key ?? jwtKey);
}

async function buyCredits(userId: string, credits: number, webhookUrl = app.webhookUrl): Promise<void> {
  const response = await deliver(webhookUrl, stripeEvent('checkout.session.completed', checkoutSession({ client_reference_id: userId, metadata: { credits: String(credits) } })));
  expect(response.body.status).toBe('processed');
}

async function getBalance(base: string, headers: Record<string, string> = {}, query = '') {
  const response = await fetch(`${base}${balancePath}${query}`, { headers });
  return { status: response.status, headers: response.headers, body: (await response.json()) as Record<string, unknown> };
}

interface ServerSentEvent {
  event: string;
  data: string;
}

/** A minimal EventSource over fetch: collects events as they arrive; `next` waits for one, with a deadline. */
class StreamClient {
  private readonly received: ServerSentEvent[] = [];
  private cursor = 0;
  private wake: (() => void) | undefined;
  private ended = false;

  private constructor(
    readonly response: Response,
    private readonly controller: AbortController,
  ) {
    void this.pump();
  }

  static async open(url: string, headers: Record<string, string> = {}): Promise<StreamClient> {
    const controller = new AbortController();
    const response = await fetch(url, { headers, signal: controller.signal });
    return new StreamClient(response, controller);
  }

  private async pump(): Promise<void> {
    const decoder = new TextDecoder();
    let buffer = '';
    try {
      for await (const chunk of this.response.body as unknown as AsyncIterable<Uint8Array>) {
        buffer += decoder.decode(chunk, { stream: true });
        let boundary: number;
        while ((boundary = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, boundary);
          buffer = buffer.slice(boundary + 2);
          const lines = block.split('\n');
          const field = (name: string) =>
            lines
              .filter((line) => line.startsWith(`${name}: `))
              .map((line) => line.slice(name.length + 2))
              .join('\n');
          if (lines.some((line) => line.startsWith('data: '))) this.received.push({ event: field('event') || 'message', data: field('data') });
          this.wake?.();
        }
      }
    } catch {
      // Aborted by close(), or the server went away: the waiters below see `ended`.
    } finally {
      this.ended = true;
      this.wake?.();
    }
  }

  /** The next event not returned before; fails after the deadline or when the stream ends. */
  async next(deadlineMillis = streamDeadlineMillis): Promise<ServerSentEvent> {
    const deadline = Date.now() + deadlineMillis;
    while (this.cursor >= this.received.length) {
      if (this.ended) throw new Error(`stream ended; events so far: ${JSON.stringify(this.received)}`);
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw new Error(`no event within ${deadlineMillis} ms; events so far: ${JSON.stringify(this.received)}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, remaining);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = undefined;
    }
    return this.received[this.cursor++]!;
  }

  async nextBalance(): Promise<Record<string, unknown>> {
    const message = await this.next();
    expect(message.event).toBe('balance');
    return JSON.parse(message.data) as Record<string, unknown>;
  }

  /** Events that arrived and were not read yet. */
  get unread(): ServerSentEvent[] {
    return this.received.slice(this.cursor);
  }

  close(): void {
    this.controller.abort();
  }
}

/** Polls `check` until it holds or the deadline passes (no fixed sleeps). */
async function eventually(check: () => boolean, deadlineMillis = streamDeadlineMillis): Promise<void> {
  const deadline = Date.now() + deadlineMillis;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('condition not reached before the deadline');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

describe('GET /api/v1/billing/credits', () => {
  test('a valid session token returns the user’s own balance, never cached', async () => {
    const user = newUser();
    await buyCredits(user, 500);
    const response = await getBalance(app.url, { Authorization: `Bearer ${await tokenFor(user)}` });
    expect(response.status).toBe(200);
    expect(response.headers.get('cache-control')).toBe('no-store');
    expect(response.body).toEqual({
      userId: user,
      purchasedCredits: 500,
      subscriptionCredits: 0,
      totalCredits: 500,
      plan: null,
      subscriptionStatus: null,
      currentPeriodEnd: null,
    });
  });

  test('another user’s token sees only that user’s balance, whatever the request names', async () => {
    const owner = newUser();
    const other = newUser();
    await buyCredits(owner, 700);
    const otherToken = await tokenFor(other);
    for (const query of ['', `?user_id=${owner}`, `?sub=${owner}`, `?access_token=${await tokenFor(owner)}`]) {
      const response = await getBalance(app.url, { Authorization: `Bearer ${otherToken}` }, query);
      expect(response.status).toBe(200);
      expect(response.body).toMatchObject({ userId: other, purchasedCredits: 0, totalCredits: 0 });
      expect(JSON.stringify(response.body)).not.toContain(owner);
    }
  });

  test('a missing token is refused with 401', async () => {
    const response = await getBalance(app.url);
    expect(response.status).toBe(401);
    expect(response.body.userId).toBeUndefined();
  });

  test('invalid, tampered, expired, wrongly signed and wrong-algorithm tokens all get the same 401 without detail', async () => {
    const user = newUser();
    await buyCredits(user, 100);
    const valid = await tokenFor(user);
    const [header, , signature] = valid.split('.');
    const tamperedPayload = base64url.encode(JSON.stringify({ sub: newUser(), exp: Math.floor(Date.now() / 1000) + 600 }));
    const badTokens = {
      garbage: 'not-a-jwt',
      tampered: `${header}.${tamperedPayload}.${signature}`,
      expired: await tokenFor(user, { expiresAt: Math.floor(Date.now() / 1000) - 60 }),
      otherSecret: await tokenFor(user, { key: new TextEncoder().encode('some-other-secret-0123456789abcdef') }),
      hs512: await tokenFor(user, { alg: 'HS512' }),
      unsigned: new UnsecuredJWT({}).setSubject(user).setExpirationTime('10m').encode(),
      withoutSubject: await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('10m').sign(jwtKey),
    };
    const bodies = new Set<string>();
    for (const [name, token] of Object.entries(badTokens)) {
      const response = await getBalance(app.url, { Authorization: `Bearer ${token}` });
      expect({ name, status: response.status }).toEqual({ name, status: 401 });
      bodies.add(JSON.stringify(response.body));
    }
    expect(bodies.size).toBe(1);
    const [body] = [...bodies];
    expect(body).not.toMatch(/claim|signature|algorithm|HS512|JWS|JWT|none|subject/i);
    expect(body).not.toContain(user);
  });

  test('a 401 names the Bearer scheme, and the scheme is matched in any case', async () => {
    const user = newUser();
    expect((await getBalance(app.url)).headers.get('www-authenticate')).toBe('Bearer');
    expect((await getBalance(app.url, { authorization: `bearer ${await tokenFor(user)}` })).status).toBe(200);
  });

  test('the JSON route does not take ?access_token= (tokens stay out of URLs where headers work)', async () => {
    const response = await getBalance(app.url, {}, `?access_token=${await tokenFor(newUser())}`);
    expect(response.status).toBe(401);
  });

  test('without a JWT secret the user routes do not exist (404)', async () => {
    const user = newUser();
    const token = await tokenFor(user);
    expect((await fetch(`${withoutJwt.url}${balancePath}`, { headers: { Authorization: `Bearer ${token}` } })).status).toBe(404);
    expect((await fetch(`${withoutJwt.url}${streamPath}?access_token=${token}`)).status).toBe(404);
  });
});

describe('GET /api/v1/billing/credits/stream', () => {
  test('sends the current balance at once, then a new balance event when a webhook credits the user', async () => {
    const user = newUser();
    await buyCredits(user, 40);
    const stream = await StreamClient.open(`${app.url}${streamPath}`, { Authorization: `Bearer ${await tokenFor(user)}` });
    try {
      expect(stream.response.status).toBe(200);
      expect(stream.response.headers.get('content-type')).toBe('text/event-stream');
      expect(await stream.nextBalance()).toMatchObject({ userId: user, purchasedCredits: 40, totalCredits: 40 });

      await buyCredits(user, 60);
      expect(await stream.nextBalance()).toMatchObject({ userId: user, purchasedCredits: 100, totalCredits: 100 });
    } finally {
      stream.close();
    }
  });

  test('a webhook delivered to another instance reaches the stream through PostgreSQL NOTIFY', async () => {
    const user = newUser();
    const stream = await StreamClient.open(`${replica.url}${streamPath}`, { Authorization: `Bearer ${await tokenFor(user)}` });
    try {
      expect(await stream.nextBalance()).toMatchObject({ userId: user, purchasedCredits: 0 });
      await buyCredits(user, 250, app.webhookUrl);
      expect(await stream.nextBalance()).toMatchObject({ userId: user, purchasedCredits: 250, totalCredits: 250 });
    } finally {
      stream.close();
    }
  });

  test('?access_token= opens the stream, since browsers’ EventSource cannot send headers', async () => {
    const user = newUser();
    await buyCredits(user, 15);
    const stream = await StreamClient.open(`${app.url}${streamPath}?access_token=${encodeURIComponent(await tokenFor(user))}`);
    try {
      expect(stream.response.status).toBe(200);
      expect(await stream.nextBalance()).toMatchObject({ userId: user, purchasedCredits: 15 });
      await buyCredits(user, 5);
      expect(await stream.nextBalance()).toMatchObject({ purchasedCredits: 20 });
    } finally {
      stream.close();
    }
  });

  test('another user’s balance changes never reach this user’s stream', async () => {
    const user = newUser();
    const other = newUser();
    const stream = await StreamClient.open(`${replica.url}${streamPath}`, { Authorization: `Bearer ${await tokenFor(user)}` });
    try {
      expect(await stream.nextBalance()).toMatchObject({ userId: user });
      await buyCredits(other, 999, app.webhookUrl);
      await buyCredits(other, 1, replica.webhookUrl);
      await buyCredits(user, 3, app.webhookUrl);
      // Events arrive in order: had the other user's changes been sent, they would come before this one.
      expect(await stream.nextBalance()).toEqual(expect.objectContaining({ userId: user, purchasedCredits: 3 }));
      expect(stream.unread.map((message) => message.data).join()).not.toContain(other);
    } finally {
      stream.close();
    }
  });

  test('a missing or invalid token gets 401 instead of a stream', async () => {
    const missing = await fetch(`${app.url}${streamPath}`);
    expect(missing.status).toBe(401);
    expect(missing.headers.get('content-type')).not.toContain('text/event-stream');
    await missing.text();
    const invalid = await fetch(`${app.url}${streamPath}?access_token=${await tokenFor(newUser(), { expiresAt: Math.floor(Date.now() / 1000) - 60 })}`);
    expect(invalid.status).toBe(401);
    await invalid.text();
  });

  test('the stream ends when the session token that opened it expires', async () => {
    const user = newUser();
    const expiresAt = Math.floor(Date.now() / 1000) + 2;
    const stream = await StreamClient.open(`${app.url}${streamPath}`, { authorization: `Bearer ${await tokenFor(user, { expiresAt })}` });
    try {
      await stream.nextBalance();
      await expect(stream.next(5_000)).rejects.toThrow('stream ended');
    } finally {
      stream.close();
    }
  });

  test('a client that disconnects leaves no stream open on the server', async () => {
    const user = newUser();
    const before = app.app.notifier.openStreams;
    const stream = await StreamClient.open(`${app.url}${streamPath}`, { Authorization: `Bearer ${await tokenFor(user)}` });
    await stream.nextBalance();
    expect(app.app.notifier.openStreams).toBe(before + 1);
    stream.close();
    await eventually(() => app.app.notifier.openStreams === before);
  });

  test('a client that closes its stream is normal: no error is logged', async () => {
    const own = await startTestApp(database.db, { jwtSecret });
    try {
      const stream = await StreamClient.open(`${own.url}${streamPath}`, { Authorization: `Bearer ${await tokenFor(newUser())}` });
      await stream.nextBalance();
      stream.close();
      // The server notices the disconnect when its pipe to the socket fails: wait for what it logs then.
      await eventually(() => own.logLines.some((line) => line.includes('client closed the connection') || (JSON.parse(line) as { level: number }).level >= 50));
      expect(own.logLines.filter((line) => (JSON.parse(line) as { level: number }).level >= 50)).toEqual([]);
    } finally {
      await own.close();
    }
  });
});

test('every balance equals its ledger, no session is granted twice, no grant lacks a paid purchase', async () => {
  // Every stream this file opened was closed.
  await eventually(() => app.app.notifier.openStreams + replica.app.notifier.openStreams === 0);
  expect(await checkInvariants(database.db)).toEqual(invariantsHold);
});
