import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createApp } from './app';
import { loadCatalog } from './credits/catalog';
import { ConfigError, loadConfig, type Config } from './config';
import { lockDataDir } from './dataDirLock';
import { connectDatabase, describeError } from './db';
import { ensureDevServiceToken, ensureDevWebhookSecret, sessionKey } from './devSecret';
import { startDevelopmentStripe, type DevelopmentStripe } from './developmentStripe';
import { startEmbeddedDatabase, type EmbeddedDatabase } from './embeddedDatabase';
import { createLogger, logDestination, type Logger } from './logger';
import { runMigrations } from './migrations';
import { startPeriodicReplay } from './replay/periodicReplay';
import { databaseStartupError, listenStartupError, migrationStartupError, StartupError, startupExitCodes, unexpectedStartupError } from './startupFailure';
import { createStripeClient, stripeReaders, watchStripeApiKeyFile } from './stripeApi';
import { listenForBalanceChanges } from './users/balanceChanges';
import type { SessionTokenOptions } from './users/sessionTokens';
import { fixedSecrets, watchSecretFile, type SecretStore } from './webhook/secretStore';
import { webhookPath } from './webhook/route';
import { HANDLED_EVENT_TYPES } from './webhook/handledEventTypes';
import { creditsPagePath } from './creditsPage/route';
import { parseCommandLine } from '../scripts/lib/cli';

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
  let catalog = loadCatalog(config.creditCatalogFile);
  let stripe = await stripeClient(config, logger, undo);
  let developmentStripe: DevelopmentStripe | undefined;
  if (config.useLocalStripe) {
    developmentStripe = await startDevelopmentStripe(logger, config.creditCatalogFile ? catalog : undefined);
    undo.push(developmentStripe.stop);
    catalog = developmentStripe.catalog;
    stripe = createStripeClient(developmentStripe.apiKey, developmentStripe.apiBase);
  }
  if (!stripe) logger.warn('STRIPE_API_KEY not set: credits can come only from metadata.credits, not from the catalog by price; checkout and sync-payment answer 503');
  const sessionTokens = await sessionTokenOptions(config, logger);
  const serviceApiToken = await serviceToken(config, logger);
  // In development, what is not set is filled in once the address is known: the service's own credits page.
  const checkoutUrls = config.production && !(config.billingSuccessUrl && config.billingCancelUrl) ? undefined : { successUrl: config.billingSuccessUrl ?? '', cancelUrl: config.billingCancelUrl ?? '' };
  if (!checkoutUrls) logger.warn('BILLING_SUCCESS_URL and BILLING_CANCEL_URL are not both set: POST /api/v1/billing/checkout answers 503');

  const shutdown = new AbortController();
  const app = createApp({
    db,
    secrets,
    logger,
    eventContext: { catalog, ...stripeReaders(stripe) },
    stripeMode: config.stripeMode,
    maxBodyBytes: config.webhookMaxBodyBytes,
    sessionTokens,
    serviceApiToken,
    stripe,
    checkoutUrls,
    corsAllowedOrigins: config.corsAllowedOrigins,
    shutdownSignal: shutdown.signal,
  });
  // Runs before the database closes: the last batch of changes reaches the other replicas.
  undo.push(() => app.balanceChanges.flush());
  undo.push(await listenForBalanceChanges(db, app.balanceChanges));
  if (config.stripeReplayIntervalSeconds !== undefined && stripe) {
    const replay = startPeriodicReplay({
      db,
      stripe,
      eventContext: { catalog, ...stripeReaders(stripe) },
      stripeMode: config.stripeMode,
      intervalSeconds: config.stripeReplayIntervalSeconds,
      logger,
      // As the webhook route does after its commit: every replica's open balance streams see the change.
      onBalanceChanged: (userId) => app.balanceChanges.changed(userId),
    });
    undo.push(replay.stop);
  }

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
  if (checkoutUrls) {
    checkoutUrls.successUrl ||= `${url}${creditsPagePath}?checkout=success&session_id={CHECKOUT_SESSION_ID}`;
    checkoutUrls.cancelUrl ||= `${url}${creditsPagePath}?checkout=cancelled`;
  }
  developmentStripe?.registerWebhook(`${url}${webhookPath}`, secrets.current()[0]!.value, HANDLED_EVENT_TYPES);
  logger.info(
    { url, webhook: `${url}${webhookPath}`, creditsPage: `${url}${creditsPagePath}`, stripeMode: config.stripeMode, startupMillis: Date.now() - startedAtMillis },
    'service listening',
  );
  if (!config.production) logger.info(`credits page: ${url}${creditsPagePath} (sign in with a token from \`npm run make-token -- --user alice\`)`);

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

/** The Stripe client of the configured key; from STRIPE_API_KEY_FILE, the key is re-read when the file changes. */
async function stripeClient(config: Config, logger: Logger, undo: Array<() => unknown>) {
  if (config.stripeApiKeyFile) {
    const keyFile = await watchStripeApiKeyFile(config.stripeApiKeyFile, { logger, mode: config.stripeMode });
    undo.push(keyFile.close);
    return createStripeClient(keyFile, config.stripeApiBase);
  }
  return config.stripeApiKey ? createStripeClient(config.stripeApiKey, config.stripeApiBase) : undefined;
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

/** How user session tokens are checked; in development a key is made up, so that the balance routes work too. */
async function sessionTokenOptions(config: Config, logger: Logger): Promise<SessionTokenOptions | undefined> {
  const key = await sessionKey(config);
  if (!key) {
    logger.warn('Neither AUTH_JWT_SECRET nor AUTH_JWKS_URL is set: the user routes (/api/v1/billing/credits, checkout, sync-payment, ledger) are disabled');
    return undefined;
  }
  if (key.devKey) {
    logger.warn(
      { keyFile: key.devKey.path },
      `AUTH_JWT_SECRET not set: ${key.devKey.created ? 'generated' : 'reused'} the development session key in ${key.devKey.path}. ` +
        'Make a token with `npm run make-token -- --user alice`; set AUTH_JWT_SECRET_FILE or AUTH_JWKS_URL for real use.',
    );
  }
  return key.tokens;
}

/** The token of the service-to-service routes (spending); in development one is made up. */
async function serviceToken(config: Config, logger: Logger): Promise<string | undefined> {
  if (config.serviceApiToken) return config.serviceApiToken;
  if (config.production) {
    logger.warn('SERVICE_API_TOKEN not set: POST /api/v1/billing/credits/consume is disabled');
    return undefined;
  }
  const devToken = await ensureDevServiceToken(config.dataDir);
  logger.warn(
    { tokenFile: devToken.path },
    `SERVICE_API_TOKEN not set: ${devToken.created ? 'generated' : 'reused'} the development service token in ${devToken.path}; set SERVICE_API_TOKEN_FILE for real use.`,
  );
  return devToken.value;
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

const usage = `Usage: npm start            (built: node dist/service/main.js; in the image, its CMD)

Starts the Stripe credits webhook service: migrates the database, then serves the webhook, the user and
billing routes and the credits page. It takes no arguments: every setting comes from the environment,
read and checked once at start (README, "Configuration"); the main ones:
  DATABASE_URL[_FILE]            PostgreSQL; unset in development: an embedded one, its address logged
  STRIPE_MODE                    test or live
  STRIPE_WEBHOOK_SECRET[_FILE]   the endpoint's signing secret(s), one whsec_… per line, reloaded on change
  STRIPE_API_KEY[_FILE]          sk_/rk_ key of the same mode; unset in development: a local Stripe
  PORT, HOST                     where to listen (3000, 127.0.0.1; 0.0.0.0 in production)
  NODE_ENV=production            every required setting must be set, or the start stops naming it
A failed start prints one line naming the cause and the fix, and exits ${startupExitCodes.configuration} (a setting), ${startupExitCodes.database} (the database
unreachable or refusing the login), ${startupExitCodes.migration} (a migration failed, rolled back), ${startupExitCodes.listen} (the port is taken), ${startupExitCodes.dataDirInUse} (another
npm start uses DATA_DIR), ${startupExitCodes.embeddedDatabase} (the embedded PostgreSQL failed) or ${startupExitCodes.unexpected} (a bug). SIGTERM finishes in-flight requests, then exits 0.

Options:
  -h, --help   show this text
`;

async function main(): Promise<void> {
  // Settings come from the environment only: --help answers, any argument is a usage error (exit 2).
  parseCommandLine({ usage, options: {} });
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
