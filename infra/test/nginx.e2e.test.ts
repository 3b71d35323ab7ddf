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
import { checkoutSession, signedDelivery, stripeEvent } from '../../service/test/support/stripeFixtures';
import { webhookPath } from '../../service/webhook/route';
import { configDefaults } from '../config';
import { renderNginxConfig, type NginxConfigParams } from '../nginxConfig';
import { startDnsServer, type DnsServer } from './support/dnsServer';
import { inParallel, openEventStream, request, type Edge, type Reply } from './support/httpsClient';
import { readLog, startNginx, testNginxConfig, type NginxProcess } from './support/nginxProcess';
import { makeSelfSignedCertificate } from './support/tls';

const domain = 'billing.test';
const replicaHosts = ['127.0.0.1', '127.0.0.2'];
const upstreamName = 'billing-api';
const webhookSecret = 'whsec_endToEndSecretThroughNginx';
const apiKey = 'sk_test_endToEndKey';
const jwtSecret = 'end-to-end-session-key-0123456789abcdef';
const tokensUsed: string[] = [];

/** The config exactly as infra/index.ts renders it, placed on loopback ports and paths of this test. */
function edgeConfig(dir: string, ports: { https: number; http: number }, upstream: string, resolver: string): string {
  const tls = makeSelfSignedCertificate(dir, domain);
  const params: NginxConfigParams = {
    domain,
    httpsListen: `127.0.0.1:${ports.https}`,
    httpListen: `127.0.0.1:${ports.http}`,
    httpsPublicPort: ports.https,
    tlsCertificatePath: tls.certificatePath,
    tlsKeyPath: tls.keyPath,
    upstream,
    resolver,
    maxBodyBytes: configDefaults.webhookMaxBodyBytes,
    webhookRatePerSecond: configDefaults.webhookRateLimitPerSecond,
    webhookBurst: configDefaults.webhookRateLimitBurst,
    runtimeDir: dir,
    errorLog: path.join(dir, 'error.log'),
    accessLog: path.join(dir, 'access.log'),
    workerProcesses: 1,
  };
  return renderNginxConfig(params);
}

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

    const ports = { https: await freePort(), http: await freePort() };
    httpPort = ports.http;
    nginxDir = mkdtempSync(path.join(os.tmpdir(), 'nginx-e2e-prefix-'));
    config = edgeConfig(nginxDir, ports, `${upstreamName}:${servicePort}`, dns.address);
    nginx = await startNginx(nginxDir, config);
    edge = { host: '127.0.0.1', port: ports.https, domain, ca: readFileSync(path.join(nginxDir, 'tls.crt')) };
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
    expect(JSON.parse(balance.body)).toMatchObject({ userId: 'user_e2e_applied', purchasedCredits: 500, totalCredits: 500 });
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

  test('unknown paths, and the service’s metrics and probes, are 404 through nginx', async () => {
    for (const path of ['/', '/metrics', '/healthz', '/readyz', '/api/v2/billing/credits', '/api/v1/billing']) {
      const reply: Reply = await request(edge, { path });
      expect({ path, status: reply.status }).toEqual({ path, status: 404 });
      expect(reply.headers.server).toBe('nginx'); // server_tokens off: no version
    }
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
    const token = await sessionToken('user_e2e_stream');
    const stream = await openEventStream(edge, `/api/v1/billing/credits/stream?access_token=${token}`);
    try {
      const initial = await stream.next((data) => data.includes('"userId":"user_e2e_stream"'));
      expect(JSON.parse(initial)).toMatchObject({ totalCredits: 0 });

      expect((await deliver(purchase('user_e2e_stream', 250))).status).toBe(200);

      const updated = await stream.next((data) => data.includes('"totalCredits":250'));
      expect(JSON.parse(updated)).toMatchObject({ userId: 'user_e2e_stream', purchasedCredits: 250 });
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

    expect(logs).toContain('/api/v1/billing/credits/stream'); // the stream request was logged, without its query
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
    const ports = { https: await freePort(), http: await freePort() };
    nginx = await startNginx(dir, edgeConfig(dir, ports, `${upstreamName}:${port}`, dns.address));
    edge = { host: '127.0.0.1', port: ports.https, domain, ca: readFileSync(path.join(dir, 'tls.crt')) };
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
