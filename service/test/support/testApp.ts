import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { createApp, type App, type AppDeps } from '../../app';
import { emptyCatalog } from '../../credits/catalog';
import type { Database } from '../../db';
import { createLogger, type Logger } from '../../logger';
import { webhookPath } from '../../webhook/route';
import { fixedSecrets, type SecretStore } from '../../webhook/secretStore';
import { signedDelivery } from './stripeFixtures';
import { createTestDatabase, type TestDatabase } from './testDatabase';

export const testWebhookSecret = 'whsec_test_0123456789abcdef0123456789abcdef';

/** A logger whose JSON lines are kept in memory, so tests can read (and scan) what was logged. */
export function captureLogger(level = 'debug'): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      done();
    },
  });
  return { logger: createLogger(level, sink), lines };
}

export interface TestApp {
  url: string;
  webhookUrl: string;
  app: App;
  logLines: string[];
  close(): Promise<void>;
}

export type TestAppOptions = Partial<Omit<AppDeps, 'db' | 'secrets'>> & { secrets?: SecretStore };

/** The real app on a real loopback port, against the given database. */
export async function startTestApp(db: Database, options: TestAppOptions = {}): Promise<TestApp> {
  const captured = captureLogger();
  const app = createApp({
    db,
    secrets: options.secrets ?? fixedSecrets([testWebhookSecret]),
    logger: options.logger ?? captured.logger,
    eventContext: options.eventContext ?? { catalog: emptyCatalog(), fetchLineItems: undefined },
    stripeMode: options.stripeMode ?? 'test',
    maxBodyBytes: options.maxBodyBytes ?? 1024 * 1024,
    ...options,
  });
  const server: Server = createServer(app.callback);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    webhookUrl: `${url}${webhookPath}`,
    app,
    logLines: captured.lines,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export interface DeliveryResponse {
  status: number;
  body: { received?: boolean; status?: string; error?: string; message?: string };
  headers: Headers;
}

/** POSTs an event signed like Stripe does (or a raw body with custom headers) and returns the response. */
export async function deliver(
  webhookUrl: string,
  event: object | string,
  options: { secrets?: string[]; timestampSeconds?: number; headers?: Record<string, string> } = {},
): Promise<DeliveryResponse> {
  const delivery = signedDelivery(event, options.secrets ?? [testWebhookSecret], { timestampSeconds: options.timestampSeconds });
  const response = await fetch(webhookUrl, { method: 'POST', headers: { ...delivery.headers, ...options.headers }, body: delivery.body });
  const text = await response.text();
  let body: DeliveryResponse['body'] = {};
  try {
    body = JSON.parse(text) as DeliveryResponse['body'];
  } catch {
    // Non-JSON answers (e.g. from a proxy) are checked by status alone.
  }
  return { status: response.status, body, headers: response.headers };
}

export interface AppOnFreshDatabase {
  /** The test database's connection (after `beforeAll`). */
  readonly db: Database;
  /** Where signed deliveries go (after `beforeAll`). */
  readonly webhookUrl: string;
}

/**
 * For a test file or a describe block: a database of its own and the real app on it, created before its
 * tests and dropped after them.
 */
export function useAppOnFreshDatabase(options: TestAppOptions = {}): AppOnFreshDatabase {
  let database: TestDatabase | undefined;
  let app: TestApp | undefined;
  beforeAll(async () => {
    database = await createTestDatabase();
    app = await startTestApp(database.db, options);
  });
  afterAll(async () => {
    await app?.close();
    await database?.drop();
  });
  const started = () => {
    if (!database || !app) throw new Error('useAppOnFreshDatabase: used outside a test (its beforeAll has not run)');
    return { database, app };
  };
  return {
    get db() {
      return started().database.db;
    },
    get webhookUrl() {
      return started().app.webhookUrl;
    },
  };
}
