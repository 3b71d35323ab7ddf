import { readFileSync } from 'node:fs';
import path from 'node:path';
import * as pulumi from '@pulumi/pulumi';
import { ConfigError, minimumKeyBytes, parseCheckoutReturnUrl, parseJwksUrl, parseOrigins, parseReplayInterval } from '../service/config';
import { parseCatalog } from '../service/credits/catalog';
import { webhookPath } from '../service/webhook/route';
import { STRIPE_API_BASE, stripeKeyMode, type StripeMode } from './stripeWebhookEndpoint';

/**
 * The stack's configuration, read and checked once before any resource exists. Every key is declared,
 * with its description and default, in Pulumi.yaml. A mistake stops `pulumi up` here, naming the key
 * and the command that fixes it, and never quoting a secret.
 */
export interface DeployConfig {
  stack: string;
  /** Prefix of every Docker object's name, so that two stacks can share one Docker host. */
  namePrefix: string;
  mode: StripeMode;
  domain: string;
  webhookUrl: string;
  dockerHost: string;
  /** The Docker host's platform: images are built and pulled for it, whatever machine runs Pulumi. */
  platform: string;
  replicas: number;
  httpsPort: number;
  httpPort: number;
  /** Host directory (on the Docker host) that holds the secret files. */
  secretsDir: string;
  /** Host directory nginx serves at /.well-known/acme-challenge/ (certbot's webroot). */
  acmeWebrootDir: string;
  stripe: {
    /** The deployment's key: manages the webhook endpoint. */
    apiKey: pulumi.Output<string>;
    /** The key the service reads with: serviceStripeApiKey, else the deployment's key. */
    serviceApiKey: pulumi.Output<string>;
    apiBase: string;
    /** An existing endpoint to adopt; empty to let Pulumi create one. */
    endpointId: string;
    /** The endpoint's signing secret, when Pulumi cannot know it (adoption, Dashboard roll). */
    suppliedWebhookSecret: pulumi.Output<string> | undefined;
    endpointDisabled: boolean;
  };
  database:
    | { kind: 'container'; image: string; password: pulumi.Output<string>; backups: { dir: string; intervalHours: number; retentionDays: number } }
    | { kind: 'external'; url: pulumi.Output<string> };
  tls: { certificate: string; key: pulumi.Output<string> };
  service: {
    memoryMb: number;
    cpus: string;
    logLevel: string;
    maxBodyBytes: number;
    /** How the user routes check session tokens: a shared HS256 key, or the product's key set; neither: the routes are off. */
    sessionKey: { kind: 'secret'; secret: pulumi.Output<string> } | { kind: 'jwks'; url: string } | undefined;
    /** When set, session tokens must carry this `iss` / `aud`. */
    authJwtIssuer: string | undefined;
    authJwtAudience: string | undefined;
    /** Bearer token of the product's back end for spending credits; absent: spending is off. */
    serviceApiToken: pulumi.Output<string> | undefined;
    /** Origins whose pages may call the user routes from the browser. */
    corsAllowedOrigins: string[];
    /** Where Stripe Checkout sends the buyer back; absent: checkout answers 503. */
    checkoutUrls: { successUrl: string; cancelUrl: string } | undefined;
    /** Content of the credit catalog JSON, validated with the service's own parser. */
    creditCatalog: string | undefined;
    /** Seconds between the replicas' periodic replays of Stripe's events (one at a time); undefined: off. */
    replayIntervalSeconds: number | undefined;
  };
  nginx: { image: string; webhookRatePerSecond: number; webhookBurst: number };
}

/** Defaults of the optional settings; Pulumi.yaml declares the same values (a test keeps them equal). */
export const configDefaults = {
  dockerHost: 'unix:///var/run/docker.sock',
  platform: 'linux/amd64',
  replicas: 2,
  stripeApiBase: STRIPE_API_BASE,
  serviceMemoryMb: 512,
  serviceCpus: '1',
  logLevel: 'info',
  webhookMaxBodyBytes: 1024 * 1024,
  stripeReplayIntervalSeconds: 0,
  // Pinned by digest (the tag says what it is, the digest what runs): an image changes only when this does.
  postgresImage: 'postgres:17-bookworm@sha256:4f736ae292687621d4dbe0d499ffd024a36bd2ee7d8ca6f2ccd4c800f047b394',
  httpsPort: 443,
  httpPort: 80,
  // The same nginx version as the end-to-end tests run (Debian bookworm's 1.22.1).
  nginxImage: 'nginx:1.22.1-alpine@sha256:a9e4fce28ad7cc7de45772686a22dbeaeeb54758b16f25bf8f64ce33f3bff636',
  webhookRateLimitPerSecond: 100,
  webhookRateLimitBurst: 500,
  backupIntervalHours: 24,
  backupRetentionDays: 14,
};

/** An image reference pinned by digest: `name[:tag]@sha256:<64 hex>`. */
const pinnedImage = /^[a-z0-9][a-z0-9._/-]*(:[\w.-]+)?@sha256:[0-9a-f]{64}$/;

const logLevels = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/** A configuration mistake: reported by Pulumi without a stack trace. */
function configError(message: string): pulumi.RunError {
  return new pulumi.RunError(`Configuration: ${message}`);
}

/**
 * The folder of Pulumi.yaml. `pulumi up` runs the program with `main:` (infra/) as its working directory,
 * while operators write paths in the stack configuration relative to where they run `pulumi`: the project.
 */
export function projectRoot(): string {
  // The engine sets it (PULUMI_NODEJS_ROOT_DIRECTORY); without an engine the SDK answers a placeholder word.
  const fromEngine = pulumi.runtime.getRootDirectory();
  return path.isAbsolute(fromEngine) ? fromEngine : path.resolve(__dirname, '..');
}

export function loadDeployConfig(): DeployConfig {
  const project = pulumi.getProject();
  const stack = pulumi.getStack();
  const config = new pulumi.Config();

  /**
   * A secret key's plain value, read without the SDK's "use getSecret" warning so that its shape can be
   * checked now, before anything is created; callers wrap it in pulumi.secret() at once. Every such key
   * is declared `secret: true` in Pulumi.yaml, so Pulumi refuses a value set without --secret; and, with
   * no default there, each stack sets it: empty (encrypted all the same) when unused.
   */
  const getSecret = (key: string): string | undefined => {
    const value = pulumi.runtime.getConfig(`${project}:${key}`)?.trim();
    return value ? value : undefined;
  };
  const requireSecret = (key: string, hint: string): string => {
    const value = getSecret(key);
    if (value === undefined) throw configError(`${key} is not set: pulumi config set --secret ${key} ${hint}`);
    return value;
  };
  const text = (key: string, fallback: string): string => config.get(key)?.trim() || fallback;
  const integer = (key: string, fallback: number, min: number, max: number): number => {
    const value = config.getNumber(key) ?? fallback;
    if (!Number.isInteger(value) || value < min || value > max) {
      throw configError(`${key} must be a whole number from ${min} to ${max}, got ${value}.`);
    }
    return value;
  };
  const readLocalFile = (key: string, file: string): string => {
    const resolved = path.resolve(projectRoot(), file);
    try {
      return readFileSync(resolved, 'utf8');
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? 'unknown error';
      throw configError(`${key} names ${resolved}, which cannot be read (${code}). Fix the path or create the file.`);
    }
  };

  const hostDirectory = (key: string, fallback: string): string => {
    const dir = text(key, '') || fallback;
    if (!/^\/[\w.-]+(\/[\w.-]+)+$/.test(dir)) throw configError(`${key} must be an absolute path below /, got "${dir}".`);
    return dir;
  };
  const image = (key: string, fallback: string): string => {
    const reference = text(key, fallback);
    if (!pinnedImage.test(reference)) {
      throw configError(`${key} must be pinned by digest (name:tag@sha256:…, see docker buildx imagetools inspect), got "${reference}".`);
    }
    return reference;
  };

  const mode = config.require('stripeMode');
  if (mode !== 'test' && mode !== 'live') throw configError(`stripeMode must be "test" or "live", got "${mode}".`);

  const domain = config.require('domain').trim().toLowerCase();
  if (!/^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$/.test(domain)) {
    throw configError(`domain must be a public host name such as billing.example.com, got "${domain}".`);
  }
  const httpsPort = integer('httpsPort', configDefaults.httpsPort, 1, 65535);
  const httpPort = integer('httpPort', configDefaults.httpPort, 1, 65535);

  // The key decides which Stripe account mode Pulumi talks to: it must match the stack before any call.
  const apiKey = requireSecret('stripeApiKey', `sk_${mode}_…`);
  const keyMode = stripeKeyMode(apiKey);
  if (keyMode === undefined) throw configError('stripeApiKey is not a Stripe secret (sk_…) or restricted (rk_…) key.');
  if (keyMode !== mode) {
    throw configError(`stripeApiKey is a ${keyMode}-mode key but this stack's stripeMode is ${mode}: set a ${mode}-mode key.`);
  }

  // The service's own key: it needs to write Checkout Sessions and read prices, subscriptions, invoices and
  // events. Without it the service gets the deployment's key, which can also change webhook endpoints.
  const serviceApiKey = getSecret('serviceStripeApiKey');
  if (serviceApiKey !== undefined) {
    const serviceKeyMode = stripeKeyMode(serviceApiKey);
    if (serviceKeyMode === undefined) throw configError('serviceStripeApiKey is not a Stripe restricted (rk_…) or secret (sk_…) key.');
    if (serviceKeyMode !== mode) {
      throw configError(`serviceStripeApiKey is a ${serviceKeyMode}-mode key but this stack's stripeMode is ${mode}: set a ${mode}-mode key.`);
    }
  }

  const apiBase = text('stripeApiBase', configDefaults.stripeApiBase);
  if (mode === 'live' && apiBase !== STRIPE_API_BASE) {
    throw configError(`stripeApiBase must be ${STRIPE_API_BASE} in a live stack (live keys go to Stripe only), got "${apiBase}".`);
  }
  if (!/^https?:\/\/[^\s/]+$/.test(apiBase)) throw configError(`stripeApiBase must be a base URL such as ${STRIPE_API_BASE}, got "${apiBase}".`);

  const endpointId = text('stripeWebhookEndpointId', '');
  if (endpointId && !/^we_\w+$/.test(endpointId)) throw configError(`stripeWebhookEndpointId must look like we_…, got "${endpointId}".`);
  const suppliedWebhookSecret = getSecret('stripeWebhookSecret');
  if (suppliedWebhookSecret !== undefined && !/^whsec_\w+$/.test(suppliedWebhookSecret)) {
    throw configError('stripeWebhookSecret must be an endpoint signing secret (whsec_…).');
  }
  if (endpointId && suppliedWebhookSecret === undefined) {
    throw configError(
      `stripeWebhookEndpointId adopts ${endpointId}, whose signing secret Stripe shows only in the Dashboard: ` +
        'pulumi config set --secret stripeWebhookSecret whsec_…',
    );
  }

  const databaseUrl = getSecret('databaseUrl');
  let database: DeployConfig['database'];
  if (databaseUrl !== undefined) {
    if (!/^postgres(ql)?:\/\//.test(databaseUrl)) throw configError('databaseUrl must be a postgres:// URL.');
    database = { kind: 'external', url: pulumi.secret(databaseUrl) };
  } else {
    const password = requireSecret('postgresPassword', '"$(openssl rand -base64 32)"  (or set databaseUrl for an external PostgreSQL)');
    database = {
      kind: 'container',
      image: image('postgresImage', configDefaults.postgresImage),
      password: pulumi.secret(password),
      backups: {
        dir: hostDirectory('backupsDir', `/srv/${project}/${stack}/backups`),
        intervalHours: integer('backupIntervalHours', configDefaults.backupIntervalHours, 1, 24 * 7),
        retentionDays: integer('backupRetentionDays', configDefaults.backupRetentionDays, 1, 3650),
      },
    };
  }

  const certificate = readLocalFile('tlsCertificateFile', config.require('tlsCertificateFile'));
  if (!certificate.includes('-----BEGIN CERTIFICATE-----')) throw configError('tlsCertificateFile must hold a PEM certificate (chain).');
  const key = readLocalFile('tlsKeyFile', config.require('tlsKeyFile'));
  if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(key)) throw configError('tlsKeyFile must hold a PEM private key.');

  const logLevel = text('logLevel', configDefaults.logLevel);
  if (!logLevels.includes(logLevel)) throw configError(`logLevel must be one of ${logLevels.join(', ')}, got "${logLevel}".`);

  const catalogFile = text('creditCatalogFile', '');
  let creditCatalog: string | undefined;
  if (catalogFile) {
    creditCatalog = readLocalFile('creditCatalogFile', catalogFile);
    try {
      parseCatalog(JSON.parse(creditCatalog), `creditCatalogFile ${catalogFile}`);
    } catch (error) {
      throw configError((error as Error).message);
    }
  }
  // The billing API's settings, checked with the service's own rules so that a replica never refuses them at start.
  const serviceRule = <T>(check: () => T): T => {
    try {
      return check();
    } catch (error) {
      throw error instanceof ConfigError ? configError(error.message) : error;
    }
  };
  const longEnough = (key: string, value: string | undefined): string | undefined => {
    if (value !== undefined && Buffer.byteLength(value) < minimumKeyBytes) {
      throw configError(`${key} is shorter than ${minimumKeyBytes} bytes: pulumi config set --secret ${key} "$(openssl rand -hex 32)"`);
    }
    return value;
  };
  const authJwtSecret = longEnough('authJwtSecret', getSecret('authJwtSecret'));
  const authJwksUrl = text('authJwksUrl', '');
  if (authJwtSecret !== undefined && authJwksUrl) {
    throw configError('authJwtSecret and authJwksUrl are both set; session tokens are checked with one of them: set the other to "".');
  }
  const sessionKey: DeployConfig['service']['sessionKey'] = authJwtSecret
    ? { kind: 'secret', secret: pulumi.secret(authJwtSecret) }
    : authJwksUrl
      ? { kind: 'jwks', url: serviceRule(() => parseJwksUrl(authJwksUrl, 'authJwksUrl')).toString() }
      : undefined;
  const serviceApiToken = longEnough('serviceApiToken', getSecret('serviceApiToken'));
  const corsAllowedOrigins = serviceRule(() => parseOrigins(text('corsAllowedOrigins', ''), 'corsAllowedOrigins'));
  const successUrl = text('billingSuccessUrl', '');
  const cancelUrl = text('billingCancelUrl', '');
  if (Boolean(successUrl) !== Boolean(cancelUrl)) {
    throw configError('billingSuccessUrl and billingCancelUrl go together (Checkout needs both): set both, or both to "".');
  }
  const checkoutUrls = successUrl
    ? serviceRule(() => ({ successUrl: parseCheckoutReturnUrl(successUrl, 'billingSuccessUrl'), cancelUrl: parseCheckoutReturnUrl(cancelUrl, 'billingCancelUrl') }))
    : undefined;

  const replayInterval = integer('stripeReplayIntervalSeconds', configDefaults.stripeReplayIntervalSeconds, 0, 86_400);
  const replayIntervalSeconds = serviceRule(() => parseReplayInterval(String(replayInterval), 'stripeReplayIntervalSeconds'));

  const cpus = text('serviceCpus', configDefaults.serviceCpus);
  if (!/^\d+(\.\d+)?$/.test(cpus) || Number(cpus) <= 0) throw configError(`serviceCpus must be a positive number such as 0.5, got "${cpus}".`);

  const secretsDir = hostDirectory('secretsDir', `/srv/${project}/${stack}/secrets`);
  const acmeWebrootDir = hostDirectory('acmeWebrootDir', `/srv/${project}/${stack}/acme`);

  const platform = text('platform', configDefaults.platform);
  if (!/^linux\/(amd64|arm64|arm\/v7|arm\/v6|386|ppc64le|s390x|riscv64)$/.test(platform)) {
    throw configError(`platform must be the Docker host's platform such as linux/amd64 or linux/arm64, got "${platform}".`);
  }

  const namePrefix = `${project}-${stack}`.toLowerCase().replace(/[^a-z0-9_.-]/g, '-');
  return {
    stack,
    namePrefix,
    mode,
    domain,
    webhookUrl: `https://${domain}${httpsPort === 443 ? '' : `:${httpsPort}`}${webhookPath}`,
    dockerHost: text('dockerHost', configDefaults.dockerHost),
    platform,
    replicas: integer('replicas', configDefaults.replicas, 1, 32),
    httpsPort,
    httpPort,
    secretsDir,
    acmeWebrootDir,
    stripe: {
      apiKey: pulumi.secret(apiKey),
      apiBase,
      serviceApiKey: pulumi.secret(serviceApiKey ?? apiKey),
      endpointId,
      suppliedWebhookSecret: suppliedWebhookSecret === undefined ? undefined : pulumi.secret(suppliedWebhookSecret),
      endpointDisabled: config.getBoolean('stripeWebhookDisabled') ?? false,
    },
    database,
    tls: { certificate, key: pulumi.secret(key) },
    service: {
      memoryMb: integer('serviceMemoryMb', configDefaults.serviceMemoryMb, 128, 65536),
      cpus,
      logLevel,
      maxBodyBytes: integer('webhookMaxBodyBytes', configDefaults.webhookMaxBodyBytes, 1024, 64 * 1024 * 1024),
      sessionKey,
      authJwtIssuer: text('authJwtIssuer', '') || undefined,
      authJwtAudience: text('authJwtAudience', '') || undefined,
      serviceApiToken: serviceApiToken === undefined ? undefined : pulumi.secret(serviceApiToken),
      corsAllowedOrigins,
      checkoutUrls,
      creditCatalog,
      replayIntervalSeconds,
    },
    nginx: {
      image: image('nginxImage', configDefaults.nginxImage),
      webhookRatePerSecond: integer('webhookRateLimitPerSecond', configDefaults.webhookRateLimitPerSecond, 1, 100000),
      webhookBurst: integer('webhookRateLimitBurst', configDefaults.webhookRateLimitBurst, 1, 100000),
    },
  };
}
