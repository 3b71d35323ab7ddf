import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createApp } from './app';
import { loadCatalog } from './credits/catalog';
import { ConfigError, loadConfig, type Config } from './config';
import { connectDatabase, describeError } from './db';
import { ensureDevWebhookSecret } from './devSecret';
import type { EmbeddedDatabase } from './embeddedDatabase';
import { createLogger, type Logger } from './logger';
import { runMigrations } from './migrations';
import { createStripeClient, stripeReaders } from './stripeApi';
import { fixedSecrets, watchSecretFile, type SecretStore } from './webhook/secretStore';
import { webhookPath } from './webhook/route';

export interface RunningService {
  server: Server;
  url: string;
  stop(): Promise<void>;
}

/** How long SIGTERM waits for in-flight requests before closing the remaining connections. */
const shutdownGraceMillis = 10_000;
/** During shutdown, how often connections whose request has been answered are closed. */
const idleSweepMillis = 50;
const keepAliveTimeoutMillis = 65_000;

/** Wires configuration → database → migrations → secrets → app → listening server. */
export async function startService(config: Config, logger: Logger): Promise<RunningService> {
  const startedAtMillis = Date.now();
  let embedded: EmbeddedDatabase | undefined;
  let databaseUrl = config.databaseUrl;
  if (!databaseUrl) {
    embedded = await startEmbeddedDatabase(config.dataDir);
    databaseUrl = embedded.url;
    logger.warn({ dataDir: config.dataDir }, 'DATABASE_URL not set: using an embedded PostgreSQL (PGlite) for development; set DATABASE_URL for real use');
  }

  const db = connectDatabase({ connectionString: databaseUrl, poolMax: config.databasePoolMax, logger });
  await runMigrations(db, logger);

  const secrets = await loadWebhookSecrets(config, logger);
  logger.info({ fingerprints: secrets.current().map((secret) => secret.fingerprint) }, 'webhook signing secrets loaded');
  const catalog = loadCatalog(config.creditCatalogFile);
  const stripe = config.stripeApiKey ? createStripeClient(config.stripeApiKey, config.stripeApiBase) : undefined;
  if (!stripe) logger.warn('STRIPE_API_KEY not set: credits can come only from metadata.credits, not from the catalog by price');
  if (!config.authJwtSecret) logger.warn('AUTH_JWT_SECRET not set: the user balance routes (/api/v1/billing/credits) are disabled');

  const shutdown = new AbortController();
  const app = createApp({
    db,
    secrets,
    logger,
    eventContext: { catalog, ...stripeReaders(stripe) },
    stripeMode: config.stripeMode,
    maxBodyBytes: config.webhookMaxBodyBytes,
    jwtSecret: config.authJwtSecret,
    shutdownSignal: shutdown.signal,
  });
  const stopListening = await db.listen(
    'credit_balance_changed',
    (userId) => app.notifier.notify(userId),
    () => app.notifier.notifyAll(),
  );

  const server = createServer(app.callback);
  server.keepAliveTimeout = keepAliveTimeoutMillis;
  server.headersTimeout = keepAliveTimeoutMillis + 1_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port, config.host, resolve);
  });
  const { port } = server.address() as AddressInfo;
  const url = `http://${config.host.includes(':') ? `[${config.host}]` : config.host}:${port}`;
  logger.info({ url, webhook: `${url}${webhookPath}`, stripeMode: config.stripeMode, startupMillis: Date.now() - startedAtMillis }, 'service listening');

  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      shutdown.abort();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      // A keep-alive connection turns idle once its in-flight request is answered: close it then, rather
      // than letting it hold the exit until the grace period ends.
      const idleSweep = setInterval(() => server.closeIdleConnections(), idleSweepMillis);
      const grace = setTimeout(() => server.closeAllConnections(), shutdownGraceMillis);
      await closed;
      clearInterval(idleSweep);
      clearTimeout(grace);
      secrets.close();
      await stopListening();
      await db.close();
      await embedded?.stop();
    })());
  return { server, url, stop };
}

/** PGlite is a development dependency (27 MB): loaded only here, so production images do without it. */
async function startEmbeddedDatabase(dataDir: string): Promise<EmbeddedDatabase> {
  let embeddedModule: typeof import('./embeddedDatabase.js');
  try {
    embeddedModule = await import('./embeddedDatabase.js');
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code !== 'ERR_MODULE_NOT_FOUND' && code !== 'MODULE_NOT_FOUND') throw error;
    throw new ConfigError(
      'DATABASE_URL is not set and the embedded development database is not installed (production dependencies only). Set DATABASE_URL or DATABASE_URL_FILE.',
    );
  }
  return embeddedModule.startEmbeddedDatabase(dataDir);
}

async function loadWebhookSecrets(config: Config, logger: Logger): Promise<SecretStore> {
  const source = config.webhookSecret;
  if (source?.kind === 'value') return fixedSecrets([source.value]);
  if (source?.kind === 'file') return watchSecretFile(source.path, { logger });
  const devSecretPath = await ensureDevWebhookSecret(config.dataDir);
  logger.warn(
    { secretFile: devSecretPath },
    `No webhook secret configured: generated a development secret in ${devSecretPath}. ` +
      'Send a signed test event with `npm run send-test-event`; set STRIPE_WEBHOOK_SECRET_FILE for real use.',
  );
  return watchSecretFile(devSecretPath, { logger });
}

async function main(): Promise<void> {
  let config: Config;
  try {
    config = loadConfig(process.env);
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(`Configuration error: ${error.message}`);
      process.exit(78); // EX_CONFIG: a supervisor should not restart-loop on this.
    }
    throw error;
  }
  const logger = createLogger(config.logLevel);
  // A stray rejection is a bug to log, not a reason to drop every in-flight delivery.
  process.on('unhandledRejection', (reason) => logger.error({ err: describeError(reason) }, 'unhandled promise rejection'));

  // Handlers go in before start-up: a stop during start-up (migrations run in one transaction, nothing
  // is served yet) simply exits; after it, in-flight requests finish first.
  let service: RunningService | undefined;
  const onSignal = (signal: NodeJS.Signals) => {
    if (!service) {
      logger.info({ signal }, 'stopped during start-up');
      process.exit(0);
    }
    logger.info({ signal }, 'shutting down: finishing in-flight requests');
    service.stop().then(
      () => process.exit(0),
      (error: unknown) => {
        logger.error({ err: describeError(error) }, 'unclean shutdown');
        process.exit(1);
      },
    );
  };
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);

  try {
    service = await startService(config, logger);
  } catch (error) {
    logger.fatal({ err: describeError(error) }, 'service failed to start');
    process.exit(1);
  }
}

if (require.main === module) void main();
