/**
 * Bad input, fuzzed: whatever reaches the webhook port, the process stays up, answers a client fault with
 * a 4xx (never a 5xx), applies nothing that is not authentic, and keeps its memory bounded.
 */
import fc from 'fast-check';
import { HANDLED_EVENT_TYPES } from '../../webhook/handledEventTypes';
import { checkDeliveryInvariants, deliveryInvariantsHold } from '../support/deliveryInvariants';
import { findLogLeaks } from '../support/logScan';
import { rawExchange, rawPost, type RawResponse } from '../support/rawHttp';
import { allServiceLogLines, startServiceProcess, stopAllServiceProcesses, type ServiceProcess } from '../support/serviceProcess';
import { charge, checkoutSession, signStripePayload, stripeEvent, subscription, unixSeconds } from '../support/stripeFixtures';
import { createTestDatabase, type TestDatabase } from '../support/testDatabase';
import { newFigures, reportFigures } from './figures';

const secret = 'whsec_reliability_fuzz_3141592653589793238462643383279502';
const path = '/api/v1/billing/stripe/webhook';
const maxBodyBytes = 1024 * 1024; // the service's default WEBHOOK_MAX_BODY_BYTES
const runsPerProperty = 150;
/**
 * Resident memory allowed under this fuzzing, and how much more repeating a burst may take (a leak would).
 * Parsing one authentic 1 MiB body of nested arrays alone takes ~60 MB for a moment (observed peaks here:
 * 130–180 MB), hence more room than the 200 MB the service stays under with real traffic.
 */
const rssLimitBytes = 256 * 1024 * 1024;
const rssCreepLimitBytes = 24 * 1024 * 1024;

const figures = newFigures();
const statusCounts: Record<string, number> = {};
/** Ids of events the service may rightly record: authentic, well-formed, of its mode. */
const mayBeRecorded = new Set<string>();
let database: TestDatabase;
let service: ServiceProcess;
let rssAtStartBytes = 0;
let rssPeakBytes = 0;

beforeAll(async () => {
  database = await createTestDatabase();
  service = await startServiceProcess({ databaseUrl: database.url, webhookSecret: secret, name: 'fuzzed service' });
  // One real delivery first, so the baseline includes a warmed-up process.
  expect((await send(signedHeaders(JSON.stringify(control())), JSON.stringify(control()))).status).toBe(400);
  rssAtStartBytes = service.rssBytes()!;
});
afterAll(async () => {
  await stopAllServiceProcesses();
  await database?.drop();
  reportFigures('badInput', figures);
});

function sampleRss(): void {
  rssPeakBytes = Math.max(rssPeakBytes, service.rssBytes() ?? 0);
}

async function tried(response: Promise<RawResponse>): Promise<RawResponse> {
  figures.inputsTried++;
  const answer = await response;
  statusCounts[answer.status] = (statusCounts[answer.status] ?? 0) + 1;
  sampleRss();
  return answer;
}

function send(headerLines: ReadonlyArray<string | Buffer>, body: Buffer | string, options?: { omitLength?: boolean; sendBodyBytes?: number }) {
  return tried(rawPost(service.port, path, ['Content-Type: application/json; charset=utf-8', ...headerLines], body, options));
}

function signedHeaders(body: Buffer | string, options: { secrets?: string[]; timestampSeconds?: number } = {}): string[] {
  const payload = typeof body === 'string' ? body : body.toString('utf8');
  return [`Stripe-Signature: ${signStripePayload(payload, options.secrets ?? [secret], options.timestampSeconds ?? unixSeconds())}`];
}

/** A purchase of a million credits that must never be granted by anything below. */
function forged() {
  return stripeEvent('checkout.session.completed', checkoutSession({ client_reference_id: 'user_forged', metadata: { credits: '1000000' } }));
}
function control() {
  return stripeEvent('checkout.session.completed', checkoutSession({ livemode: true, client_reference_id: 'user_forged', metadata: { credits: '1' } }));
}

function expectClientFault(answer: RawResponse, allowed: number[] = [400]): void {
  expect(allowed).toContain(answer.status);
}

const hexChar = fc.constantFrom(...'0123456789abcdef');
const hex64 = fc.string({ unit: hexChar, minLength: 64, maxLength: 64 });

test('forged, mutated and malformed Stripe-Signature headers are refused with a 400 and apply nothing', async () => {
  figures.scenarios++;
  // Every header below is invalid by construction: nothing in it is a correct signature of the body.
  const header = fc.oneof(
    fc.constant({ kind: 'missing' as const }),
    fc.record({ kind: fc.constant('random' as const), value: fc.string({ maxLength: 300 }) }),
    fc.record({ kind: fc.constant('non-ascii' as const), value: fc.string({ unit: 'binary', minLength: 1, maxLength: 100 }) }),
    fc.record({ kind: fc.constant('flipped hex' as const), position: fc.nat({ max: 63 }), by: fc.integer({ min: 1, max: 15 }) }),
    fc.record({ kind: fc.constant('shifted t' as const), by: fc.integer({ min: -10_000, max: 10_000 }).filter((n) => n !== 0) }),
    fc.record({ kind: fc.constant('no t' as const) }),
    fc.record({ kind: fc.constant('several v1' as const), values: fc.array(hex64, { minLength: 2, maxLength: 40 }) }),
    // Whitespace is ignored in the header (it does not change what is signed), so it does not break a signature.
    fc.record({
      kind: fc.constant('non-ascii in v1' as const),
      position: fc.nat({ max: 63 }),
      value: fc.string({ unit: 'binary', minLength: 1, maxLength: 4 }).filter((value) => !/[\s]/.test(value)),
    }),
    fc.record({ kind: fc.constant('huge' as const), length: fc.integer({ min: 8_000, max: 200_000 }) }),
    fc.record({ kind: fc.constant('repeated header' as const), values: fc.array(hex64, { minLength: 2, maxLength: 5 }) }),
  );
  await fc.assert(
    fc.asyncProperty(header, async (choice) => {
      const event = forged();
      const body = JSON.stringify(event, null, 2);
      const now = unixSeconds();
      const valid = signStripePayload(body, [secret], now);
      const signature = valid.split('v1=')[1]!;
      let lines: Array<string | Buffer>;
      switch (choice.kind) {
        case 'missing':
          lines = [];
          break;
        case 'random':
        case 'non-ascii':
          lines = [Buffer.concat([Buffer.from('Stripe-Signature: '), Buffer.from(choice.value.replace(/[\r\n]/g, ''), 'utf8')])];
          break;
        case 'flipped hex': {
          const flipped = (parseInt(signature[choice.position]!, 16) ^ choice.by).toString(16);
          lines = [`Stripe-Signature: t=${now},v1=${signature.slice(0, choice.position)}${flipped}${signature.slice(choice.position + 1)}`];
          break;
        }
        case 'shifted t':
          lines = [`Stripe-Signature: t=${now + choice.by},v1=${signature}`];
          break;
        case 'no t':
          lines = [`Stripe-Signature: v1=${signature}`];
          break;
        case 'several v1':
          lines = [`Stripe-Signature: t=${now},${choice.values.map((v) => `v1=${v}`).join(',')}`];
          break;
        case 'non-ascii in v1':
          lines = [Buffer.from(`Stripe-Signature: t=${now},v1=${signature.slice(0, choice.position)}${choice.value}${signature.slice(choice.position)}`, 'utf8')];
          break;
        case 'huge':
          lines = [`Stripe-Signature: t=${now},v1=${'a'.repeat(choice.length)}`];
          break;
        case 'repeated header':
          lines = choice.values.map((v) => `Stripe-Signature: t=${now},v1=${v}`);
          break;
      }
      // Node answers 431 itself when the header block passes its 16 KiB limit.
      expectClientFault(await send(lines, body), [400, 431]);
    }),
    { numRuns: runsPerProperty },
  );
});

test('authentic bodies that are not Stripe events are refused with a 400', async () => {
  figures.scenarios++;
  const validBody = () => JSON.stringify(forged(), null, 2);
  const envelopeBreaks: Array<[string, unknown]> = [
    ['id', 42],
    ['id', 'evt_with spaces'],
    ['id', 'charge_123'],
    ['object', 'charge'],
    ['type', 'Checkout.Session.Completed'],
    ['type', ''],
    ['livemode', 'false'],
    ['created', -1],
    ['created', 1.5],
    ['created', '1760000000'],
    ['data', null],
    ['data', { object: [] }],
    ['data', { object: 'cs_123' }],
  ];
  // Descriptions, built into bytes inside the property, so a failure prints a short counterexample.
  const body = fc.oneof(
    fc.record({ kind: fc.constant('json' as const), text: fc.json() }),
    fc.record({ kind: fc.constant('text' as const), text: fc.string({ unit: 'binary', maxLength: 2_000 }) }),
    fc.record({ kind: fc.constant('truncated' as const), share: fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }) }),
    fc.record({ kind: fc.constant('deeply nested' as const), open: fc.constantFrom('[', '{"a":'), share: fc.double({ min: 0.001, max: 1, noNaN: true }) }),
    fc.record({ kind: fc.constant('wrong encoding' as const), encoding: fc.constantFrom('utf16le', 'utf16le+bom', 'utf8+bom') }),
    fc.record({ kind: fc.constant('broken envelope' as const), field: fc.constantFrom(...envelopeBreaks) }),
  );
  const build = (choice: typeof body extends fc.Arbitrary<infer T> ? T : never): Buffer => {
    switch (choice.kind) {
      case 'json':
      case 'text':
        return Buffer.from(choice.text);
      case 'truncated': {
        const full = validBody();
        return Buffer.from(full.slice(0, Math.floor(full.length * choice.share)));
      }
      case 'deeply nested': {
        // Up to just under the body limit: deeper is a 413, tested below.
        const close = choice.open === '[' ? ']' : '}';
        const depth = Math.max(1, Math.floor((choice.share * (maxBodyBytes - 1)) / (choice.open.length + close.length)));
        return Buffer.from(`${choice.open.repeat(depth)}1${close.repeat(depth)}`);
      }
      case 'wrong encoding': {
        const text = validBody();
        if (choice.encoding === 'utf8+bom') return Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(text)]);
        return Buffer.from(`${choice.encoding.endsWith('bom') ? '\ufeff' : ''}${text}`, 'utf16le');
      }
      case 'broken envelope':
        return Buffer.from(JSON.stringify({ ...forged(), [choice.field[0]]: choice.field[1] }));
    }
  };
  await fc.assert(
    fc.asyncProperty(body, async (choice) => {
      const bytes = build(choice);
      // Signed over the exact bytes, as Stripe would sign whatever it sent.
      const signature = signStripePayload(bytes.toString('latin1'), [secret]);
      const answer = await send([Buffer.concat([Buffer.from('Stripe-Signature: '), Buffer.from(signature, 'latin1')])], bytes);
      // A signature over bytes that are not UTF-8 text does not verify: refused either way, as a 400.
      expectClientFault(answer);
      expect(answer.body).toMatch(/malformed_event|no_matching_signature/);
    }),
    { numRuns: runsPerProperty },
  );
});

test('a valid delivery with any byte of its body changed is refused', async () => {
  figures.scenarios++;
  await fc.assert(
    fc.asyncProperty(fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), fc.integer({ min: 1, max: 255 }), async (share, xor) => {
      const body = Buffer.from(JSON.stringify(forged(), null, 2));
      const headers = signedHeaders(body);
      const position = Math.floor(body.length * share);
      body[position] = body[position]! ^ xor;
      const answer = await send(headers, body);
      expectClientFault(answer);
    }),
    { numRuns: runsPerProperty },
  );
});

test('timestamps outside five minutes either way, and other secrets, are refused', async () => {
  figures.scenarios++;
  const skew = fc.oneof(fc.integer({ min: 301, max: 2_000_000_000 }), fc.integer({ min: -2_000_000_000, max: -301 }));
  await fc.assert(
    fc.asyncProperty(skew, async (seconds) => {
      const body = JSON.stringify(forged());
      const timestampSeconds = Math.max(0, unixSeconds() + seconds);
      const answer = await send(signedHeaders(body, { timestampSeconds }), body);
      expectClientFault(answer);
      expect(answer.body).toMatch(/timestamp_outside_tolerance|malformed_signature/);
    }),
    { numRuns: runsPerProperty / 3 },
  );
  await fc.assert(
    fc.asyncProperty(fc.string({ minLength: 1, maxLength: 60, unit: 'grapheme-ascii' }), async (suffix) => {
      const body = JSON.stringify(forged());
      const answer = await send(signedHeaders(body, { secrets: [`whsec_${suffix}`] }), body);
      expectClientFault(answer);
      expect(answer.body).toContain('no_matching_signature');
    }),
    { numRuns: runsPerProperty / 3 },
  );
});

test('authentic events of the other mode are refused and authentic events of unknown types are only acknowledged', async () => {
  figures.scenarios++;
  const liveEvents = [
    () => control(),
    () => stripeEvent('customer.subscription.updated', subscription({ livemode: true, metadata: { user_id: 'user_forged' } }, { monthlyCredits: 1000 })),
    () => stripeEvent('charge.refunded', charge({ livemode: true, amount_refunded: 1000 })),
  ];
  await fc.assert(
    fc.asyncProperty(fc.constantFrom(...liveEvents), async (build) => {
      const body = JSON.stringify(build());
      const answer = await send(signedHeaders(body), body);
      expectClientFault(answer);
      expect(answer.body).toContain('livemode_mismatch');
    }),
    { numRuns: 20 },
  );
  const unknownType = fc.stringMatching(/^[a-z0-9_.]{1,100}$/).filter((type) => !(HANDLED_EVENT_TYPES as readonly string[]).includes(type));
  await fc.assert(
    fc.asyncProperty(unknownType, async (type) => {
      const event = stripeEvent(type, checkoutSession({ client_reference_id: 'user_forged', metadata: { credits: '1000000' } }));
      const body = JSON.stringify(event);
      const answer = await send(signedHeaders(body), body);
      expect(answer.status).toBe(200);
      expect(answer.body).toMatch(/"status":"(ignored|duplicate)"/);
      mayBeRecorded.add(event.id);
    }),
    { numRuns: runsPerProperty / 3 },
  );
});

test('multi-megabyte bodies get a 413 whether announced or streamed, without memory growing with them', async () => {
  figures.scenarios++;
  const megabytes = (n: number) => Buffer.alloc(Math.floor(n * 1024 * 1024), 0x61);
  // The client sends what fits before the server's answer (the limit and a bit), then waits for it.
  const sendBodyBytes = maxBodyBytes + 64 * 1024;
  const chunked = (body: Buffer) => Buffer.concat([Buffer.from(`${body.length.toString(16)}\r\n`), body, Buffer.from('\r\n0\r\n\r\n')]);
  const burst = async (count: number) => {
    const answers = await Promise.all(
      Array.from({ length: count }, (_, i) =>
        i % 2
          ? send(signedHeaders('x'), megabytes(1.01 + i), { sendBodyBytes: 64 * 1024 })
          : send(['Transfer-Encoding: chunked', ...signedHeaders('x')], chunked(megabytes(4)), { omitLength: true, sendBodyBytes }),
      ),
    );
    sampleRss();
    expect(answers.map((answer) => answer.status)).toEqual(answers.map(() => 413));
  };
  // Announced by Content-Length (refused before the body is read) and streamed in chunks without one
  // (read up to the limit), one at a time and 24 at once, three times over: memory must not creep up.
  for (const size of [1.01, 1.5, 5, 32]) expectClientFault(await send(signedHeaders('x'), megabytes(size), { sendBodyBytes: 64 * 1024 }), [413]);
  expectClientFault(await send(['Transfer-Encoding: chunked'], chunked(megabytes(3)), { omitLength: true, sendBodyBytes }), [413]);
  await burst(24);
  const rssAfterFirstBurst = service.rssBytes()!;
  await burst(24);
  await burst(24);
  expect(service.rssBytes()! - rssAfterFirstBurst).toBeLessThan(rssCreepLimitBytes);
  // Exactly at the limit is read (and then judged on its signature).
  const atLimit = Buffer.alloc(maxBodyBytes, 0x20);
  expectClientFault(await send(signedHeaders(atLimit), atLimit), [400]);
});

test('lying lengths, broken requests and raw garbage on the port get an answer or a close, never a crash', async () => {
  figures.scenarios++;
  const body = JSON.stringify(forged());
  // Announces more than it sends, then closes its side.
  const short = await tried(
    rawExchange(service.port, `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n${signedHeaders(body)[0]}\r\n\r\n${body.slice(0, 100)}`, 3_000),
  );
  expect(short.status).toBeLessThan(500);
  // Announces less than it sends: the rest is a second, broken request.
  expectClientFault(await send([...signedHeaders(body), 'Content-Length: 10'], body, { omitLength: true }));
  expectClientFault(await send([...signedHeaders(body), 'Content-Length: abc'], body, { omitLength: true }));
  await fc.assert(
    fc.asyncProperty(fc.uint8Array({ minLength: 1, maxLength: 4_000 }), async (bytes) => {
      const answer = await tried(rawExchange(service.port, Buffer.from(bytes), 3_000));
      expect(answer.status === 0 || (answer.status >= 400 && answer.status < 500)).toBe(true);
    }),
    { numRuns: runsPerProperty / 3 },
  );
  for (const method of ['GET', 'PUT', 'DELETE', 'PATCH', 'OPTIONS']) {
    const answer = await tried(rawExchange(service.port, `${method} ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`));
    expect([404, 405]).toContain(answer.status);
  }
  expectClientFault(await tried(rawExchange(service.port, `GET /${'a'.repeat(20_000)} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)), [404, 414, 431]);
});

test('after all of it the process still runs, never answered 5xx, stayed within its memory bound and applied nothing unauthentic', async () => {
  sampleRss();
  expect(service.isRunning()).toBe(true);
  expect(Object.keys(statusCounts).filter((status) => Number(status) >= 500)).toEqual([]);
  expect(rssPeakBytes).toBeLessThan(rssLimitBytes);

  const { rows } = await database.db.query<{ id: string }>('SELECT id FROM stripe_events');
  expect(rows.filter((row) => !mayBeRecorded.has(row.id))).toEqual([]);
  const ledger = await database.db.query('SELECT 1 FROM credit_ledger');
  expect(ledger.rowCount).toBe(0);
  expect(await checkDeliveryInvariants(database.db, { acknowledged: [...mayBeRecorded] })).toEqual(deliveryInvariantsHold);
  // And it still does its job.
  const event = stripeEvent('checkout.session.completed', checkoutSession({ client_reference_id: 'user_after_fuzz', metadata: { credits: '3' } }));
  const body = JSON.stringify(event);
  expect((await send(signedHeaders(body), body)).status).toBe(200);
  figures.invariantChecks += 2;
  process.stdout.write(
    `\nbadInput: ${figures.inputsTried} inputs, statuses ${JSON.stringify(statusCounts)}, RSS start ${(rssAtStartBytes / 2 ** 20).toFixed(0)} MB, peak ${(rssPeakBytes / 2 ** 20).toFixed(0)} MB\n`,
  );
});

test('no log line of the fuzzed service carries a secret or a signature', () => {
  expect(allServiceLogLines().length).toBeGreaterThan(100);
  expect(findLogLeaks(allServiceLogLines(), [secret])).toEqual([]);
  figures.invariantChecks++;
});
