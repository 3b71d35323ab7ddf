import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createApp } from './app';
import { loadCatalog } from './credits/catalog';
import { ConfigError, loadConfig, type Config } from './config';
import { lockDataDir } from './dataDirLock';
import { connectDatabase, describeError } from './db';
import { ensureDevWebhookSecret, sessionKey } from './devSecret';
import { startEmbeddedDatabase, type EmbeddedDatabase } from './embeddedDatabase';
import { createLogger, logDestination, type Logger } from './logger';
import { runMigrations } from './migrations';
import { databaseStartupError, listenStartupError, migrationStartupError, StartupError, startupExitCodes, unexpectedStartupError } from './startupFailure';
import { createStripeClient, stripeReaders } from './stripeApi';
import { fixedSecrets, watchSecretFile, type SecretStore } from './webhook/secretStore';
import { webhookPath } from './webhook/route';

export interface RunningService {
  server: Server;
  url: string;
  stop(): Promise<void>;
}

/** How long SIGTERM waits for in-flight requests before closing the remaining connections. */
export const shutdownGraceMillis = 10_000;
/** During shutdown, how often connections whose request has been answered are closed. */
const idleSweepMillis = 50;
const keepAliveTimeoutMillis = 65_000;

/**
 * Wires configuration → database → migrations → secrets → app → listening server. A failure is thrown as a
 * StartupError (one line naming the cause and the fix, and its exit code) after undoing what was started.
 */
export async function startService(config: Config, logger: Logger): Promise<RunningService> {
  const startedAtMillis = Date.now();
  const undo: Array<() => unknown> = [];
  try {
    return await startServiceSteps(config, logger, startedAtMillis, undo);
  } catch (error) {
    for (const step of undo.reverse()) await Promise.resolve(step()).catch(() => undefined);
    throw error;
  }
}

async function startServiceSteps(config: Config, logger: Logger, startedAtMillis: number, undo: Array<() => unknown>): Promise<RunningService> {
  let embedded: EmbeddedDatabase | undefined;
  let databaseUrl = config.databaseUrl;
  if (!databaseUrl) {
    undo.push(await lockDataDir(config.dataDir));
    logger.warn({ dataDir: config.dataDir }, 'DATABASE_URL not set: starting an embedded PostgreSQL for development; set DATABASE_URL for real use');
    embedded = await startEmbeddedDatabase(config.dataDir, logger);
    undo.push(embedded.stop);
    databaseUrl = embedded.url;
    logger.info({ databaseUrl }, `embedded PostgreSQL ready: psql ${databaseUrl}`);
  }

  const db = connectDatabase({ connectionString: databaseUrl, poolMax: config.databasePoolMax, logger, passwordFile: config.databasePasswordFile });
  undo.push(db.close);
  await db.ping().catch((error: unknown) => {
    throw databaseStartupError(error, databaseUrl, embedded !== undefined);
  });
  await runMigrations(db, logger).catch((error: unknown) => {
    throw migrationStartupError(error);
  });

  const secrets = await loadWebhookSecrets(config, logger);
  undo.push(secrets.close);
  logger.info({ fingerprints: secrets.current().map((secret) => secret.fingerprint) }, 'webhook signing secrets loaded');
  const catalog = loadCatalog(config.creditCatalogFile);
  const stripe = config.stripeApiKey ? createStripeClient(config.stripeApiKey, config.stripeApiBase) : undefined;
  if (!stripe) logger.warn('STRIPE_API_KEY not set: credits can come only from metadata.credits, not from the catalog by price');
  const jwtSecret = await userSessionKey(config, logger);

  const shutdown = new AbortController();
  const app = createApp({
    db,
    secrets,
    logger,
    eventContext: { catalog, ...stripeReaders(stripe) },
    stripeMode: config.stripeMode,
    maxBodyBytes: config.webhookMaxBodyBytes,
    jwtSecret,
    shutdownSignal: shutdown.signal,
  });
  const stopListening = await db.listen(
    'credit_balance_changed',
    (userId) => app.notifier.notify(userId),
    () => app.notifier.notifyAll(),
  );
  undo.push(stopListening);

  const server = createServer(app.callback);
  server.keepAliveTimeout = keepAliveTimeoutMillis;
  server.headersTimeout = keepAliveTimeoutMillis + 1_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port, config.host, resolve);
  }).catch((error: unknown) => {
    throw listenStartupError(error, config.host, config.port);
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
      for (const step of undo.reverse()) await step();
    })());
  return { server, url, stop };
}

async function loadWebhookSecrets(config: Config, logger: Logger): Promise<SecretStore> {
  const source = config.webhookSecret;
  if (source?.kind === 'value') return fixedSecrets([source.value]);
  if (source?.kind === 'file') return watchSecretFile(source.path, { logger });
  const devSecret = await ensureDevWebhookSecret(config.dataDir);
  logger.warn(
    { secretFile: devSecret.path },
    `No webhook secret configured: ${devSecret.created ? 'generated' : 'reused'} the development secret in ${devSecret.path}. ` +
      'Send a signed test event with `npm run send-test-event`; set STRIPE_WEBHOOK_SECRET_FILE for real use.',
  );
  return watchSecretFile(devSecret.path, { logger });
}

/** The key of user session tokens; in development one is made up, so that the balance routes work too. */
async function userSessionKey(config: Config, logger: Logger): Promise<string | undefined> {
  const key = await sessionKey(config);
  if (!key) {
    logger.warn('AUTH_JWT_SECRET not set: the user balance routes (/api/v1/billing/credits) are disabled');
    return undefined;
  }
  if (key.devKey) {
    logger.warn(
      { keyFile: key.devKey.path },
      `AUTH_JWT_SECRET not set: ${key.devKey.created ? 'generated' : 'reused'} the development session key in ${key.devKey.path}. ` +
        'Make a token with `npm run make-token -- --user alice`; set AUTH_JWT_SECRET_FILE for real use.',
    );
  }
  return key.value;
}

/** One line on stderr naming the cause and the fix, and the cause's exit code (README: start-up failures). */
function exitOnStartupFailure(error: unknown): never {
  const failure =
    error instanceof StartupError
      ? error
      : error instanceof ConfigError
        ? new StartupError(`Configuration error: ${error.message}`, startupExitCodes.configuration)
        : unexpectedStartupError(error);
  console.error(failure.message);
  process.exit(failure.exitCode);
}

async function main(): Promise<void> {
  let config: Config;
  try {
    config = loadConfig(process.env);
  } catch (error) {
    exitOnStartupFailure(error);
  }
  const logger = createLogger(config.logLevel, await logDestination({ production: config.production, terminal: process.stdout.isTTY === true }));
  // A stray rejection is a bug to log, not a reason to drop every in-flight delivery.
  process.on('unhandledRejection', (reason) => logger.error({ err: describeError(reason) }, 'unhandled promise rejection'));

  // Handlers go in before start-up: a stop during start-up (migrations run in one transaction, nothing
  // is served yet) simply exits; after it, in-flight requests finish first. A repeated signal (a Ctrl-C
  // reaches both npm and the service, and npm passes it on) does not cut that short.
  let service: RunningService | undefined;
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
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
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  process.on('SIGHUP', onSignal); // The terminal running `npm start` was closed.

  try {
    service = await startService(config, logger);
  } catch (error) {
    exitOnStartupFailure(error);
  }
}

if (require.main === module) void main();
