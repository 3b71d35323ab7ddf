/**
 * Security of the user routes: a session sees its own credits and nobody else's, whatever it adds to the
 * request; forged sessions see nothing; a user's live stream never carries another user's balance.
 */
import fc from 'fast-check';
import { SignJWT } from 'jose';
import { checkDeliveryInvariants, deliveryInvariantsHold } from '../support/deliveryInvariants';
import { findLogLeaks } from '../support/logScan';
import { allServiceLogLines, startServiceProcess, stopAllServiceProcesses, waitUntil, type ServiceProcess } from '../support/serviceProcess';
import { postSigned } from '../support/stripeSender';
import { checkoutSession, stripeEvent } from '../support/stripeFixtures';
import { createTestDatabase, type TestDatabase } from '../support/testDatabase';
import { newFigures, reportFigures } from './figures';

const webhookSecret = 'whsec_reliability_users_77665544332211009988aabbccddeeff';
const jwtSecret = 'reliability-session-key-do-not-log-0123456789abcdef';
const creditsPath = '/api/v1/billing/credits';
const figures = newFigures();
/** Users with distinct balances: user_iso_<i> holds 100 * (i + 1) + 7 credits. */
const users = Array.from({ length: 8 }, (_, i) => ({ id: `user_iso_${i}`, credits: 100 * (i + 1) + 7 }));

let database: TestDatabase;
let service: ServiceProcess;
const issuedTokens: string[] = [];
const acknowledged: string[] = [];

beforeAll(async () => {
  database = await createTestDatabase();
  service = await startServiceProcess({ databaseUrl: database.url, webhookSecret, env: { AUTH_JWT_SECRET: jwtSecret }, name: 'service with user routes' });
  for (const user of users) {
    const event = stripeEvent('checkout.session.completed', checkoutSession({ client_reference_id: user.id, metadata: { credits: String(user.credits) } }));
    figures.deliveriesSent++;
    expect((await postSigned(service.webhookUrl, event, [webhookSecret])).status).toBe(200);
    acknowledged.push(event.id);
  }
});
afterAll(async () => {
  await stopAllServiceProcesses();
  await database?.drop();
  reportFigures('userIsolation', figures);
});

async function session(userId: string, options: { key?: string; expiresIn?: string } = {}): Promise<string> {
  const token = await new SignJWT({})
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject(userId)
    .setIssuedAt()
    .setExpirationTime(options.expiresIn ?? '10m')
    .sign(new TextEncoder().encode(options.key ?? jwtSecret));
  issuedTokens.push(token);
  return token;
}

/** A stream ticket of the user, as the credits page asks for one. */
async function ticket(userId: string): Promise<string> {
  const response = await fetch(`${service.url}${creditsPath}/stream-ticket`, { method: 'POST', headers: { authorization: `Bearer ${await session(userId)}` } });
  expect(response.status).toBe(201);
  const issued = ((await response.json()) as { ticket: string }).ticket;
  issuedTokens.push(issued);
  return issued;
}

async function get(pathAndQuery: string, headers: Record<string, string> = {}) {
  figures.inputsTried++;
  const response = await fetch(`${service.url}${pathAndQuery}`, { headers });
  return { status: response.status, text: await response.text() };
}

/** The user ids and credit totals a response mentions. */
function mentioned(text: string): { userIds: string[]; credits: number[] } {
  return {
    userIds: users.filter((user) => text.includes(`"${user.id}"`)).map((user) => user.id),
    credits: users.filter((user) => text.includes(String(user.credits))).map((user) => user.credits),
  };
}

test("a session reads its own credits and never another user's, whatever else the request names", async () => {
  figures.scenarios++;
  const pair = fc.tuple(fc.nat({ max: users.length - 1 }), fc.nat({ max: users.length - 1 })).filter(([a, b]) => a !== b);
  const trick = fc.constantFrom(
    (other: string) => ({ path: `${creditsPath}?user_id=${other}`, headers: {} }),
    (other: string) => ({ path: `${creditsPath}?userId=${other}&sub=${other}`, headers: {} }),
    (other: string) => ({ path: `${creditsPath}/${other}`, headers: {} }),
    (other: string) => ({ path: `${creditsPath}/../credits/?user=${other}`, headers: {} }),
    (other: string) => ({ path: creditsPath, headers: { 'x-user-id': other, 'x-forwarded-user': other } }),
    (other: string) => ({ path: `${creditsPath}?access_token=TOKEN_OF_${other}`, headers: {} }),
    (other: string) => ({ path: `${creditsPath}?ticket=TICKET_OF_${other}`, headers: {} }),
  );
  await fc.assert(
    fc.asyncProperty(pair, trick, async ([self, other], build) => {
      const me = users[self]!;
      const them = users[other]!;
      const request = build(them.id);
      // The other user's real session, offered in the query next to ours in the header: the header wins.
      const pathAndQuery = request.path.replace(`TOKEN_OF_${them.id}`, await session(them.id)).replace(`TICKET_OF_${them.id}`, await ticket(them.id));
      const answer = await get(pathAndQuery, { authorization: `Bearer ${await session(me.id)}`, ...request.headers });
      expect([200, 404]).toContain(answer.status);
      expect(mentioned(answer.text).userIds.filter((id) => id !== me.id)).toEqual([]);
      expect(mentioned(answer.text).credits.filter((credits) => credits !== me.credits)).toEqual([]);
      if (answer.status === 200) expect(JSON.parse(answer.text)).toMatchObject({ user_id: me.id, purchased_credits_balance: me.credits });
    }),
    { numRuns: 60 },
  );
});

test('forged, expired, tampered and missing sessions get a 401 that names no user', async () => {
  figures.scenarios++;
  const victim = users[3]!;
  const genuine = await session(users[0]!.id);
  const [header, , signature] = genuine.split('.');
  const tamperedPayload = Buffer.from(JSON.stringify({ sub: victim.id, iat: 1, exp: 9_999_999_999 })).toString('base64url');
  const unsignedHeader = Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT' })).toString('base64url');
  const forgeries: Array<[string, Record<string, string>]> = [
    ['no session', {}],
    ['another key', { authorization: `Bearer ${await session(victim.id, { key: 'someone-elses-key-0123456789abcdef' })}` }],
    ['expired', { authorization: `Bearer ${await session(victim.id, { expiresIn: '-1m' })}` }],
    ['payload swapped under a genuine signature', { authorization: `Bearer ${header}.${tamperedPayload}.${signature}` }],
    ['alg none', { authorization: `Bearer ${unsignedHeader}.${tamperedPayload}.` }],
    ['garbage', { authorization: 'Bearer not-a-token' }],
    ['basic auth', { authorization: `Basic ${Buffer.from(`${victim.id}:x`).toString('base64')}` }],
  ];
  for (const [, headers] of forgeries) {
    const answer = await get(creditsPath, headers);
    expect(answer.status).toBe(401);
    expect(mentioned(answer.text)).toEqual({ userIds: [], credits: [] });
  }
  for (const query of [`?access_token=${header}.${tamperedPayload}.${signature}`, `?access_token=${genuine}`, `?ticket=${genuine}`, '?ticket=forged']) {
    const viaQuery = await get(`${creditsPath}/stream${query}`);
    expect(viaQuery.status).toBe(401);
  }
});

test("a user's live balance stream shows their own changes and never another user's", async () => {
  figures.scenarios++;
  const [me, them] = [users[1]!, users[2]!];
  const controller = new AbortController();
  const response = await fetch(`${service.url}${creditsPath}/stream?ticket=${await ticket(me.id)}`, { signal: controller.signal });
  expect(response.status).toBe(200);
  let received = '';
  const reading = (async () => {
    const decoder = new TextDecoder();
    try {
      for await (const chunk of response.body!) received += decoder.decode(chunk as Uint8Array, { stream: true });
    } catch {
      // Aborted at the end of the test.
    }
  })();
  await waitUntil(() => received.includes(`"purchased_credits_balance":${me.credits}`), 5_000, 'the first balance on the stream');

  const credit = async (userId: string, credits: number) => {
    const event = stripeEvent('checkout.session.completed', checkoutSession({ client_reference_id: userId, metadata: { credits: String(credits) } }));
    figures.deliveriesSent++;
    expect((await postSigned(service.webhookUrl, event, [webhookSecret])).status).toBe(200);
    acknowledged.push(event.id);
  };
  await credit(them.id, 5);
  await credit(me.id, 3);
  await waitUntil(() => received.includes(`"purchased_credits_balance":${me.credits + 3}`), 5_000, 'my own change on the stream');
  controller.abort();
  await reading;
  expect(received).not.toContain(them.id);
  expect(received).not.toContain(String(them.credits));
  expect(received).not.toContain(String(them.credits + 5));
  figures.invariantChecks++;
});

test('reading credits changed nothing: every delivery is recorded once and the books balance', async () => {
  expect(await checkDeliveryInvariants(database.db, { acknowledged })).toEqual(deliveryInvariantsHold);
  const { rows } = await database.db.query<{ count: number }>('SELECT count(*)::int AS count FROM stripe_events');
  expect(rows[0]!.count).toBe(acknowledged.length);
  figures.invariantChecks++;
});

test('no log line carries the session key, a session token, the webhook secret or a signature', () => {
  expect(allServiceLogLines().length).toBeGreaterThan(10);
  expect(findLogLeaks(allServiceLogLines(), [webhookSecret, jwtSecret, ...issuedTokens])).toEqual([]);
  figures.invariantChecks++;
});
