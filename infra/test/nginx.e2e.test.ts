/**
 * End to end on this machine: Debian's nginx (1.22) with the config the program renders, a
 * self-signed certificate, and two real service processes on loopback behind it, found through a
 * name that resolves to both (as Docker's DNS resolves the replicas' shared alias).
 */
import http from 'node:http';
import https from 'node:https';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SignJWT } from 'jose';
import { freePort } from '../../service/test/support/freePort';
import { startServiceProcess, type ServiceProcess } from '../../service/test/support/serviceProcess';
import { createTestDatabase, type TestDatabase } from '../../service/test/support/testDatabase';
import { otherSpellings } from '../../service/test/support/pathSpellings';
import { checkoutSession, signedDelivery, stripeEvent } from '../../service/test/support/stripeFixtures';
import { webhookPath } from '../../service/webhook/route';
import { configDefaults } from '../config';
import { startDnsServer, type DnsServer } from './support/dnsServer';
import { inParallel, openEventStream, request, type Edge, type Reply } from './support/httpsClient';
import { readLog, testNginxConfig, type NginxProcess } from './support/nginxProcess';
import { edgeDomain, startEdge, upstreamName } from './support/edge';

const domain = edgeDomain;
const replicaHosts = ['127.0.0.1', '127.0.0.2'];
const webhookSecret = 'whsec_endToEndSecretThroughNginx';
const apiKey = 'sk_test_endToEndKey';
const jwtSecret = 'end-to-end-session-key-0123456789abcdef';
const tokensUsed: string[] = [];

async function sessionToken(userId: string): Promise<string> {
  const token = await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject(userId).setExpirationTime('10m').sign(new TextEncoder().encode(jwtSecret));
  tokensUsed.push(token);
  return token;
}

describe('nginx in front of two service replicas', () => {
  let dir: string;
  let database: TestDatabase;
  let dns: DnsServer;
  let replicas: ServiceProcess[] = [];
  let nginx: NginxProcess | undefined;
  let edge: Edge;
  let httpPort: number;
  let servicePort: number;
  let config: string;
  let nginxDir: string;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'nginx-e2e-'));
    database = await createTestDatabase();

    // The secret files, as the writer container installs them (0400, in a directory of their own).
    const secrets = path.join(dir, 'secrets');
    mkdirSync(secrets, { mode: 0o700 });
    const secretFile = (name: string, value: string) => {
      writeFileSync(path.join(secrets, name), `${value}\n`, { mode: 0o400 });
      return path.join(secrets, name);
    };
    const serviceEnv = {
      NODE_ENV: 'production',
      STRIPE_MODE: 'test',
      STRIPE_WEBHOOK_SECRET_FILE: secretFile('stripe_webhook_secret', webhookSecret),
      STRIPE_API_KEY_FILE: secretFile('stripe_api_key', apiKey),
      DATABASE_URL_FILE: secretFile('database_url', database.url),
      AUTH_JWT_SECRET_FILE: secretFile('auth_jwt_secret', jwtSecret),
      WEBHOOK_MAX_BODY_BYTES: String(configDefaults.webhookMaxBodyBytes),
    };

    servicePort = await freePort(replicaHosts);
    replicas = await Promise.all(
      replicaHosts.map((host) =>
        startServiceProcess({ name: `replica on ${host}`, fromSources: true, host, port: servicePort, logLevel: 'info', env: serviceEnv }),
      ),
    );
    dns = await startDnsServer(upstreamName, replicaHosts);

    nginxDir = mkdtempSync(path.join(os.tmpdir(), 'nginx-e2e-prefix-'));
    ({ nginx, edge, httpPort, config } = await startEdge(nginxDir, servicePort, dns.address));
  }, 120_000);

  afterAll(async () => {
    await nginx?.stop();
    await Promise.all(replicas.map((replica) => replica.stop()));
    await dns?.close();
    await database?.drop();
    rmSync(dir, { recursive: true, force: true });
    rmSync(nginxDir, { recursive: true, force: true });
  });

  const deliver = (event: object, options: { localAddress?: string } = {}) => {
    const delivery = signedDelivery(event, [webhookSecret]);
    return request(edge, { method: 'POST', path: webhookPath, headers: delivery.headers, body: delivery.body, localAddress: options.localAddress });
  };
  const purchase = (userId: string, credits: number) =>
    stripeEvent('checkout.session.completed', checkoutSession({ client_reference_id: userId, metadata: { credits: String(credits) } }));

  /** Processed checkout events counted by one replica's own /metrics (not reachable through nginx). */
  const processedBy = async (host: string): Promise<number> => {
    const text = await new Promise<string>((resolve, reject) => {
      http
        .get({ host, port: servicePort, path: '/metrics' }, (res) => {
          let body = '';
          res.on('data', (chunk: Buffer) => (body += chunk.toString()));
          res.on('end', () => resolve(body));
        })
        .on('error', reject);
    });
    const line = text.split('\n').find((entry) => entry.startsWith('stripe_webhook_events_total{type="checkout.session.completed",outcome="processed"}'));
    return line ? Number(line.split(' ').pop()) : 0;
  };

  test('the rendered config passes nginx -t', () => {
    const configPath = path.join(nginxDir, 'nginx.conf');
    expect(readFileSync(configPath, 'utf8')).toBe(config);
    expect(testNginxConfig(nginxDir, configPath)).toMatch(/test is successful/);
  });

  test('a signed webhook through nginx is applied, and the credits show through nginx too', async () => {
    const reply = await deliver(purchase('user_e2e_applied', 500));

    expect(reply.status).toBe(200);
    expect(JSON.parse(reply.body)).toEqual({ received: true, status: 'processed' });
    const balance = await request(edge, { path: '/api/v1/billing/credits', headers: { authorization: `Bearer ${await sessionToken('user_e2e_applied')}` } });
    expect(balance.status).toBe(200);
    expect(JSON.parse(balance.body)).toMatchObject({ user_id: 'user_e2e_applied', purchased_credits_balance: 500, total_credits: 500 });
  });

  test('the load spreads over both replicas', async () => {
    const before = await Promise.all(replicaHosts.map(processedBy));
    const deliveries = 40;

    const replies = await inParallel(deliveries, 4, (index) => deliver(purchase(`user_e2e_spread_${index}`, 1)));

    expect(replies.map((reply) => reply.status)).toEqual(Array(deliveries).fill(200));
    const after = await Promise.all(replicaHosts.map(processedBy));
    const handled = after.map((count, index) => count - (before[index] ?? 0));
    expect(handled[0]! + handled[1]!).toBe(deliveries);
    expect(handled[0]).toBeGreaterThan(0);
    expect(handled[1]).toBeGreaterThan(0);
  });

  test('a method other than POST on the webhook is 405 with Allow: POST', async () => {
    for (const method of ['GET', 'PUT', 'DELETE']) {
      const reply = await request(edge, { method, path: webhookPath });
      expect({ method, status: reply.status, allow: reply.headers.allow }).toEqual({ method, status: 405, allow: 'POST' });
    }
  });

  test('a body one byte over the service’s limit is 413 at nginx, one at the limit reaches the service', async () => {
    const limit = configDefaults.webhookMaxBodyBytes;
    const post = (size: number) =>
      request(edge, { method: 'POST', path: webhookPath, headers: { 'content-type': 'application/json', 'stripe-signature': 't=1,v1=00' }, body: Buffer.alloc(size, 0x20) });

    expect((await post(limit + 1)).status).toBe(413);
    const atLimit = await post(limit);
    expect(atLimit.status).toBe(400); // the service's answer: not signed by the endpoint's secret
    expect(JSON.parse(atLimit.body)).toHaveProperty('error');
  });

  test('a Stripe-sized burst from one address passes, a flood from one address gets 429', async () => {
    const agent = new https.Agent({ keepAlive: true, maxSockets: 64 });
    const unsigned = (localAddress: string) => () =>
      request(edge, { method: 'POST', path: webhookPath, headers: { 'content-type': 'application/json' }, body: '{}', localAddress, agent });
    try {
      const burst = await inParallel(300, 64, unsigned('127.0.0.2'));
      expect(burst.filter((reply) => reply.status === 429)).toHaveLength(0);

      const startedAt = Date.now();
      const flood = await inParallel(1500, 64, unsigned('127.0.0.3'));
      const elapsedSeconds = (Date.now() - startedAt) / 1000;
      const passed = flood.filter((reply) => reply.status !== 429).length;
      expect(flood.filter((reply) => reply.status === 429).length).toBeGreaterThan(0);
      expect(passed).toBeLessThanOrEqual(configDefaults.webhookRateLimitBurst + Math.ceil(configDefaults.webhookRateLimitPerSecond * elapsedSeconds) + 1);
      expect(new Set(flood.map((reply) => reply.status))).toEqual(new Set([400, 429]));
    } finally {
      agent.destroy();
    }
  });

  test('no other spelling of the webhook path reaches the handler through nginx, one at a time or in a flood', async () => {
    const before = await Promise.all(replicaHosts.map(processedBy));
    for (const target of otherSpellings(webhookPath)) {
      const delivery = signedDelivery(purchase('user_e2e_spelling', 3), [webhookSecret]);
      const reply = await request(edge, { method: 'POST', path: target, headers: delivery.headers, body: delivery.body, localAddress: '127.0.0.5' });
      expect({ target, status: reply.status }).toEqual({ target, status: 404 });
    }

    // The flood that got 800 × 200 past the rate limit through `/webhook/` when the router ignored trailing slashes.
    const agent = new https.Agent({ keepAlive: true, maxSockets: 64 });
    try {
      const flood = await inParallel(800, 64, (index) => {
        const target = index % 2 === 0 ? `${webhookPath}/` : webhookPath.replace('webhook', 'WEBHOOK');
        const delivery = signedDelivery(purchase(`user_e2e_flood_${index}`, 1), [webhookSecret]);
        return request(edge, { method: 'POST', path: target, headers: delivery.headers, body: delivery.body, localAddress: '127.0.0.6', agent });
      });
      expect(new Set(flood.map((reply) => reply.status))).toEqual(new Set([404]));
    } finally {
      agent.destroy();
    }
    expect(await Promise.all(replicaHosts.map(processedBy))).toEqual(before);
  });

  test('nginx itself refuses other spellings inside the webhook’s folder, whatever the service’s router does', async () => {
    for (const target of [`${webhookPath}/`, webhookPath.replace('webhook', 'WEBHOOK'), `${webhookPath}/x`, '/api/v1/billing/stripe/']) {
      const reply = await request(edge, { method: 'POST', path: target, headers: { 'content-type': 'application/json' }, body: '{}' });
      // The service answers 404 in JSON; this is nginx's own page.
      expect({ target, status: reply.status, type: reply.headers['content-type'] }).toEqual({ target, status: 404, type: 'text/html' });
    }
  });

  test('unknown paths, and the service’s metrics and probes, are 404 through nginx', async () => {
    for (const path of ['/', '/metrics', '/webhook-secrets', '/healthz', '/readyz', '/api/v2/billing/credits', '/api/v1/billing']) {
      const reply: Reply = await request(edge, { path });
      expect({ path, status: reply.status }).toEqual({ path, status: 404 });
      expect(reply.headers.server).toBe('nginx'); // server_tokens off: no version
    }
  });

  test('every HTTPS answer carries HSTS, errors included', async () => {
    const answers = [
      await deliver(purchase('user_e2e_hsts', 1)),
      await request(edge, { method: 'POST', path: webhookPath, headers: { 'content-type': 'application/json' }, body: '{}' }),
      await request(edge, { method: 'GET', path: webhookPath }),
      await request(edge, { method: 'POST', path: webhookPath, body: Buffer.alloc(configDefaults.webhookMaxBodyBytes + 1, 0x20) }),
      await request(edge, { path: '/' }),
      await request(edge, { path: '/api/v1/billing/nothing-here' }),
      await request(edge, { path: '/api/v1/billing/credits?access_token=x' }),
    ];
    expect(answers.map((reply) => reply.status)).toEqual([200, 400, 405, 413, 404, 404, 400]);
    for (const reply of answers) expect({ status: reply.status, hsts: reply.headers['strict-transport-security'] }).toEqual({ status: reply.status, hsts: 'max-age=31536000' });
  });

  test('plain HTTP serves ACME challenges from the webroot (certbot --webroot) and redirects everything else', async () => {
    const challenges = path.join(nginxDir, 'acme', '.well-known', 'acme-challenge');
    mkdirSync(challenges, { recursive: true });
    writeFileSync(path.join(challenges, 'token-e2e_123'), 'token-e2e_123.keyAuthorization');
    const get = (target: string) =>
      new Promise<{ status: number; body: string; location?: string }>((resolve, reject) =>
        http
          .get({ host: '127.0.0.1', port: httpPort, path: target, headers: { host: domain } }, (reply) => {
            let body = '';
            reply.on('data', (chunk: Buffer) => (body += chunk.toString()));
            reply.on('end', () => resolve({ status: reply.statusCode ?? 0, body, location: reply.headers.location }));
          })
          .on('error', reject),
      );

    await expect(get('/.well-known/acme-challenge/token-e2e_123')).resolves.toMatchObject({ status: 200, body: 'token-e2e_123.keyAuthorization' });
    await expect(get('/.well-known/acme-challenge/unknown')).resolves.toMatchObject({ status: 404 });
    await expect(get('/.well-known/acme-challenge/../../nginx.conf')).resolves.not.toMatchObject({ status: 200 });
    await expect(get('/.well-known/other')).resolves.toMatchObject({ status: 301 });
  });

  test('plain HTTP is redirected to the same path over HTTPS', async () => {
    const reply = await new Promise<http.IncomingMessage>((resolve, reject) =>
      http.get({ host: '127.0.0.1', port: httpPort, path: '/api/v1/billing/credits?x=1', headers: { host: domain } }, resolve).on('error', reject),
    );
    reply.resume();
    expect(reply.statusCode).toBe(301);
    expect(reply.headers.location).toBe(`https://${domain}:${edge.port}/api/v1/billing/credits?x=1`);
  });

  test('the credits event stream arrives unbuffered through nginx and carries a new balance while open', async () => {
    // As the credits page does: a single-use ticket for the stream, asked for with the session token.
    const issued = await request(edge, { method: 'POST', path: '/api/v1/billing/credits/stream-ticket', headers: { authorization: `Bearer ${await sessionToken('user_e2e_stream')}` } });
    expect(issued.status).toBe(201);
    const { ticket } = JSON.parse(issued.body) as { ticket: string };
    tokensUsed.push(ticket);
    const stream = await openEventStream(edge, `/api/v1/billing/credits/stream?ticket=${ticket}`);
    try {
      const initial = await stream.next((data) => data.includes('"user_id":"user_e2e_stream"'));
      expect(JSON.parse(initial)).toMatchObject({ total_credits: 0 });

      expect((await deliver(purchase('user_e2e_stream', 250))).status).toBe(200);

      const updated = await stream.next((data) => data.includes('"total_credits":250'));
      expect(JSON.parse(updated)).toMatchObject({ user_id: 'user_e2e_stream', purchased_credits_balance: 250 });
      expect(stream.open()).toBe(true);
    } finally {
      stream.close();
    }
  });

  test('no log line of nginx or the replicas holds a secret or a session token', async () => {
    await nginx?.stop(); // flushes and closes nginx's logs
    nginx = undefined;
    await Promise.all(replicas.map((replica) => replica.stop()));
    const logs = [readLog(path.join(nginxDir, 'access.log')), readLog(path.join(nginxDir, 'error.log')), ...replicas.map((replica) => replica.logLines.join('\n'))].join('\n');

    expect(logs).toContain('/api/v1/billing/credits/stream'); // the stream request was logged
    for (const secret of [webhookSecret, apiKey, jwtSecret, ...tokensUsed]) expect(logs).not.toContain(secret);
  });
});

describe('nginx towards an upstream that records what it receives', () => {
  let dir: string;
  let dns: DnsServer;
  let nginx: NginxProcess;
  let edge: Edge;
  let upstream: http.Server;
  const received: http.IncomingHttpHeaders[] = [];
  let releaseSecondEvent: () => void = () => undefined;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'nginx-headers-'));
    const upstreamHost = '127.0.0.4';
    const port = await freePort([upstreamHost]);
    upstream = http.createServer((req, res) => {
      received.push(req.headers);
      if (req.url?.startsWith('/api/v1/billing/credits/stream')) {
        // No X-Accel-Buffering header here: only nginx's own config can keep this unbuffered.
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write('data: first\n\n');
        releaseSecondEvent = () => res.end('data: second\n\n');
        return;
      }
      res.end('{}');
    });
    await new Promise<void>((resolve) => upstream.listen(port, upstreamHost, resolve));
    dns = await startDnsServer(upstreamName, [upstreamHost]);
    ({ nginx, edge } = await startEdge(dir, port, dns.address));
  });

  afterAll(async () => {
    releaseSecondEvent();
    await nginx?.stop();
    await dns?.close();
    upstream.closeAllConnections();
    await new Promise<void>((resolve) => upstream.close(() => resolve()));
    rmSync(dir, { recursive: true, force: true });
  });

  test('X-Forwarded-For is the client’s address and X-Forwarded-Proto https, whatever the client claims', async () => {
    received.length = 0;
    await request(edge, { path: '/api/v1/billing/credits', headers: { 'x-forwarded-for': '203.0.113.9', 'x-forwarded-proto': 'http' } });

    expect(received).toHaveLength(1);
    expect(received[0]).toMatchObject({ 'x-forwarded-for': '127.0.0.1', 'x-forwarded-proto': 'https', 'x-forwarded-host': domain, host: domain });
    expect(received[0]?.['x-request-id']).toMatch(/^[0-9a-f]{32}$/);
  });

  test('an event is passed on before the upstream sends the next one (no buffering by nginx)', async () => {
    const stream = await openEventStream(edge, '/api/v1/billing/credits/stream');
    try {
      await expect(stream.next((data) => data === 'first')).resolves.toBe('first');
      releaseSecondEvent();
      await expect(stream.next((data) => data === 'second')).resolves.toBe('second');
    } finally {
      stream.close();
    }
  });
});

describe('nginx while every replica is down', () => {
  let dir: string;
  let dns: DnsServer;
  let nginx: NginxProcess | undefined;
  let edge: Edge;
  const sessionToken = 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyX2xvZ3MifQ.sessionTokenNeverInALog';
  const ticket = 'tkt_oneTimeStreamTicketNeverInALog';
  const signature = 't=1700000000,v1=signatureNeverInALog';

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'nginx-upstream-down-'));
    const downHost = '127.0.0.7';
    const nothingListens = await freePort([downHost]);
    dns = await startDnsServer(upstreamName, [downHost]);
    ({ nginx, edge } = await startEdge(dir, nothingListens, dns.address));
  });

  afterAll(async () => {
    await nginx?.stop();
    await dns?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('no credential reaches either nginx log: Authorization and Stripe-Signature are not logged, ?ticket= stays out of the error log, ?access_token= is refused before proxying', async () => {
    const bearer = { authorization: `Bearer ${sessionToken}` };
    const replies = {
      balance: await request(edge, { path: '/api/v1/billing/credits', headers: bearer }),
      streamWithHeader: await request(edge, { path: '/api/v1/billing/credits/stream', headers: bearer }),
      streamWithTicket: await request(edge, { path: `/api/v1/billing/credits/stream?ticket=${ticket}` }),
      webhook: await request(edge, { method: 'POST', path: webhookPath, headers: { 'stripe-signature': signature, 'content-type': 'application/json' }, body: '{}' }),
      streamWithToken: await request(edge, { path: `/api/v1/billing/credits/stream?access_token=${sessionToken}` }),
      balanceWithToken: await request(edge, { path: `/api/v1/billing/credits?x=1&ACCESS_TOKEN=${sessionToken}` }),
      encodedToken: await request(edge, { path: `/api/v1/billing/credits?access%5Ftoken=${sessionToken}` }),
      ticketElsewhere: await request(edge, { path: `/api/v1/billing/credits?ticket=${ticket}` }),
    };
    await nginx?.stop(); // flushes and closes both logs
    nginx = undefined;

    expect(Object.fromEntries(Object.entries(replies).map(([name, reply]) => [name, reply.status]))).toEqual({
      balance: 502,
      streamWithHeader: 502,
      streamWithTicket: 502,
      webhook: 502,
      streamWithToken: 400,
      balanceWithToken: 400,
      encodedToken: 400,
      ticketElsewhere: 400,
    });
    expect(replies.streamWithToken.body).toContain('Authorization header');
    const errorLog = readLog(path.join(dir, 'error.log'));
    const accessLog = readLog(path.join(dir, 'access.log'));
    expect(errorLog).toMatch(/connect\(\) failed .* while connecting to upstream/); // the path that quotes request lines ran
    for (const reply of Object.values(replies)) expect(reply.headers['strict-transport-security']).toBe('max-age=31536000');
    expect(accessLog.split('\n').filter(Boolean)).toHaveLength(Object.keys(replies).length);
    for (const credential of [sessionToken, ticket, 'signatureNeverInALog']) {
      expect({ credential, inErrorLog: errorLog.includes(credential), inAccessLog: accessLog.includes(credential) }).toEqual({
        credential,
        inErrorLog: false,
        inAccessLog: false,
      });
    }
  });
});
