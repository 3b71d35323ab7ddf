import { readFileSync } from 'node:fs';
import path from 'node:path';

export type StripeMode = 'test' | 'live';

/** Where a secret comes from: the value itself (env) or a file that may change at run time. */
export type SecretSource = { kind: 'value'; value: string } | { kind: 'file'; path: string };

export interface Config {
  production: boolean;
  port: number;
  host: string;
  /** Absent outside production: an embedded PostgreSQL is started under `dataDir`. */
  databaseUrl: string | undefined;
  databasePoolMax: number;
  /** A file with the database password, read for each new connection (rotation without restart). */
  databasePasswordFile: string | undefined;
  stripeMode: StripeMode;
  /** Absent outside production: a development secret is generated under `dataDir`. */
  webhookSecret: SecretSource | undefined;
  stripeApiKey: string | undefined;
  /** When the key came from STRIPE_API_KEY_FILE: the service re-reads it when it changes (rotation without restart). */
  stripeApiKeyFile: string | undefined;
  stripeApiBase: URL;
  logLevel: string;
  webhookMaxBodyBytes: number;
  creditCatalogFile: string | undefined;
  /** HS256 key of the product's session tokens (at least 32 bytes); absent outside production: a development key. */
  authJwtSecret: string | undefined;
  /** Instead of the HS256 key: the product's JSON Web Key Set (RS256/ES256 session tokens). */
  authJwksUrl: URL | undefined;
  authJwtIssuer: string | undefined;
  authJwtAudience: string | undefined;
  /** Bearer token of the service-to-service routes (consume); absent outside production: a development token. */
  serviceApiToken: string | undefined;
  /** Exact origins (scheme://host[:port]) whose pages may call the user routes from the browser. */
  corsAllowedOrigins: string[];
  /** Where Stripe Checkout sends the buyer back; absent outside production: the service's own /billing/ page. */
  billingSuccessUrl: string | undefined;
  billingCancelUrl: string | undefined;
  /** Seconds between two periodic replays of Stripe's events (one replica at a time); undefined: off. */
  stripeReplayIntervalSeconds: number | undefined;
  /** Development only, with neither STRIPE_API_KEY nor STRIPE_API_BASE set: an in-process local Stripe. */
  useLocalStripe: boolean;
  dataDir: string;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

const defaultPort = 3000;
const defaultWebhookMaxBodyBytes = 1024 * 1024;
const defaultDatabasePoolMax = 10;
const defaultStripeApiBase = 'https://api.stripe.com';
/** A day: a replay lists events of the last 30 days, and a longer gap would only delay the healing. */
const maxReplayIntervalSeconds = 86_400;
const logLevels = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
/** HS256 keys shorter than the hash (RFC 7518 §3.2) are refused; so are shorter service tokens. */
export const minimumKeyBytes = 32;

type Env = Record<string, string | undefined>;

/** Reads and validates every setting once; throws ConfigError naming the variable and the fix. */
export function loadConfig(env: Env = process.env): Config {
  const production = env.NODE_ENV === 'production';
  const missing: string[] = [];

  const databaseUrl = readSecretValue(env, 'DATABASE_URL');
  if (databaseUrl !== undefined && !/^postgres(ql)?:\/\//.test(databaseUrl)) {
    throw new ConfigError('DATABASE_URL (or the file named by DATABASE_URL_FILE) must be a postgres:// URL.');
  }
  if (production && databaseUrl === undefined) missing.push('DATABASE_URL or DATABASE_URL_FILE');

  const databasePasswordFile = nonEmpty(env.DATABASE_PASSWORD_FILE);
  if (databasePasswordFile !== undefined) readSecretValue({ DATABASE_PASSWORD_FILE: databasePasswordFile }, 'DATABASE_PASSWORD'); // readable and not empty now

  const stripeModeRaw = nonEmpty(env.STRIPE_MODE);
  if (stripeModeRaw !== undefined && stripeModeRaw !== 'test' && stripeModeRaw !== 'live') {
    throw new ConfigError(`STRIPE_MODE must be "test" or "live", got "${stripeModeRaw}".`);
  }
  if (production && stripeModeRaw === undefined) missing.push('STRIPE_MODE ("test" or "live")');
  const stripeMode: StripeMode = stripeModeRaw ?? 'test';

  const webhookSecret = secretSource(env, 'STRIPE_WEBHOOK_SECRET');
  if (production && webhookSecret === undefined) missing.push('STRIPE_WEBHOOK_SECRET or STRIPE_WEBHOOK_SECRET_FILE');

  const apiKeySource = secretSource(env, 'STRIPE_API_KEY');
  const stripeApiKey = readSecretValue(env, 'STRIPE_API_KEY');
  if (production && stripeApiKey === undefined) missing.push('STRIPE_API_KEY or STRIPE_API_KEY_FILE');
  if (stripeApiKey !== undefined) checkApiKeyMode(stripeApiKey, stripeMode);

  if (missing.length > 0) {
    throw new ConfigError(
      `Missing required setting${missing.length > 1 ? 's' : ''} in production: ${missing.join(', ')}. ` +
        'Set each as an environment variable; where an X_FILE form is named, it may instead be the path of a file that holds the value.',
    );
  }

  const authJwtSecret = readSecretValue(env, 'AUTH_JWT_SECRET');
  if (authJwtSecret !== undefined && Buffer.byteLength(authJwtSecret) < minimumKeyBytes) {
    throw new ConfigError(`AUTH_JWT_SECRET (or the file named by AUTH_JWT_SECRET_FILE) is shorter than ${minimumKeyBytes} bytes; use a random key such as \`openssl rand -hex 32\`.`);
  }
  const authJwksUrlText = nonEmpty(env.AUTH_JWKS_URL);
  const authJwksUrl = authJwksUrlText === undefined ? undefined : parseJwksUrl(authJwksUrlText, 'AUTH_JWKS_URL');
  if (authJwtSecret !== undefined && authJwksUrl !== undefined) {
    throw new ConfigError('Both AUTH_JWT_SECRET and AUTH_JWKS_URL are set; session tokens are checked with one of them: keep only one.');
  }
  const serviceApiToken = readSecretValue(env, 'SERVICE_API_TOKEN');
  if (serviceApiToken !== undefined && Buffer.byteLength(serviceApiToken) < minimumKeyBytes) {
    throw new ConfigError(`SERVICE_API_TOKEN (or the file named by SERVICE_API_TOKEN_FILE) is shorter than ${minimumKeyBytes} bytes; use a random token such as \`openssl rand -hex 32\`.`);
  }

  const useLocalStripe = !production && stripeApiKey === undefined && nonEmpty(env.STRIPE_API_BASE) === undefined;
  const stripeReplayIntervalSeconds = parseReplayInterval(nonEmpty(env.STRIPE_REPLAY_INTERVAL_SECONDS), 'STRIPE_REPLAY_INTERVAL_SECONDS');
  if (stripeReplayIntervalSeconds !== undefined && stripeApiKey === undefined && !useLocalStripe) {
    throw new ConfigError('STRIPE_REPLAY_INTERVAL_SECONDS needs STRIPE_API_KEY (or STRIPE_API_KEY_FILE): the replay reads events from the Stripe API. Set the key, or unset the interval.');
  }

  const logLevel = nonEmpty(env.LOG_LEVEL) ?? 'info';
  if (!logLevels.includes(logLevel)) {
    throw new ConfigError(`LOG_LEVEL must be one of ${logLevels.join(', ')}, got "${logLevel}".`);
  }

  return {
    production,
    port: integer(env, 'PORT', defaultPort, 0, 65535),
    host: nonEmpty(env.HOST) ?? (production ? '0.0.0.0' : '127.0.0.1'),
    databaseUrl,
    databasePoolMax: integer(env, 'DATABASE_POOL_MAX', defaultDatabasePoolMax, 1, 1000),
    databasePasswordFile: databasePasswordFile === undefined ? undefined : path.resolve(databasePasswordFile),
    stripeMode,
    webhookSecret,
    stripeApiKey,
    stripeApiKeyFile: apiKeySource?.kind === 'file' ? apiKeySource.path : undefined,
    stripeApiBase: url(env, 'STRIPE_API_BASE', defaultStripeApiBase),
    logLevel,
    webhookMaxBodyBytes: integer(env, 'WEBHOOK_MAX_BODY_BYTES', defaultWebhookMaxBodyBytes, 1, 64 * 1024 * 1024),
    creditCatalogFile: nonEmpty(env.CREDIT_CATALOG_FILE),
    authJwtSecret,
    authJwksUrl,
    authJwtIssuer: nonEmpty(env.AUTH_JWT_ISSUER),
    authJwtAudience: nonEmpty(env.AUTH_JWT_AUDIENCE),
    serviceApiToken,
    corsAllowedOrigins: parseOrigins(nonEmpty(env.CORS_ALLOWED_ORIGINS) ?? '', 'CORS_ALLOWED_ORIGINS'),
    billingSuccessUrl: optional(env, 'BILLING_SUCCESS_URL', parseCheckoutReturnUrl),
    billingCancelUrl: optional(env, 'BILLING_CANCEL_URL', parseCheckoutReturnUrl),
    stripeReplayIntervalSeconds,
    useLocalStripe,
    dataDir: path.resolve(nonEmpty(env.DATA_DIR) ?? '.data'),
  };
}

function nonEmpty(value: string | undefined): string | undefined {
  const trimmed = value?.trim();
  return trimmed ? trimmed : undefined;
}

function secretSource(env: Env, name: string): SecretSource | undefined {
  const value = nonEmpty(env[name]);
  const file = nonEmpty(env[`${name}_FILE`]);
  if (value !== undefined && file !== undefined) {
    throw new ConfigError(`Both ${name} and ${name}_FILE are set; keep only one of them.`);
  }
  if (value !== undefined) return { kind: 'value', value };
  if (file !== undefined) return { kind: 'file', path: path.resolve(file) };
  return undefined;
}

/** For secrets read once at start-up: `X` or the trimmed content of the file named by `X_FILE`. */
export function readSecretValue(env: Env, name: string): string | undefined {
  const source = secretSource(env, name);
  if (source?.kind !== 'file') return source?.value;
  let content: string;
  try {
    content = readFileSync(source.path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'unknown error';
    throw new ConfigError(`${name}_FILE points to ${source.path}, which cannot be read (${code}). Create it or fix the path.`);
  }
  const trimmed = content.trim();
  if (!trimmed) throw new ConfigError(`${name}_FILE points to ${source.path}, which is empty. Write the value into it.`);
  return trimmed;
}

/** The mode of a Stripe secret (`sk_`) or restricted (`rk_`) key, from its prefix; undefined for anything else. */
export function apiKeyMode(key: string): StripeMode | undefined {
  return /^(?:sk|rk)_(test|live)_/.exec(key)?.[1] as StripeMode | undefined;
}

/** A Stripe secret or restricted key of this mode; also checked on each reload of STRIPE_API_KEY_FILE. */
export function checkApiKeyMode(key: string, mode: StripeMode): void {
  const keyMode = apiKeyMode(key);
  if (!keyMode) {
    throw new ConfigError('STRIPE_API_KEY must be a Stripe secret or restricted key (sk_… or rk_…).');
  }
  if (keyMode !== mode) {
    throw new ConfigError(`STRIPE_API_KEY is a ${keyMode}-mode key but STRIPE_MODE is "${mode}"; use a ${mode}-mode key.`);
  }
}

function integer(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = nonEmpty(env[name]);
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new ConfigError(`${name} must be a whole number from ${min} to ${max}, got "${raw}".`);
  }
  return value;
}

function optional<T>(env: Env, name: string, parse: (raw: string, name: string) => T): T | undefined {
  const raw = nonEmpty(env[name]);
  return raw === undefined ? undefined : parse(raw, name);
}

export function isLoopbackHost(hostname: string): boolean {
  return hostname === '127.0.0.1' || hostname === 'localhost' || hostname === '[::1]' || hostname === '::1';
}

// The parsers below are shared with the deployment (infra/config.ts), which checks the same settings before
// it deploys them; `name` is the setting's name in the caller's terms.

/** Seconds between periodic replays, 1 to a day; empty or 0: off. */
export function parseReplayInterval(raw: string | undefined, name: string): number | undefined {
  if (raw === undefined || raw.trim() === '' || raw.trim() === '0') return undefined;
  const value = Number(raw);
  if (!/^\d+$/.test(raw.trim()) || !Number.isSafeInteger(value) || value > maxReplayIntervalSeconds) {
    throw new ConfigError(`${name} must be a whole number of seconds from 1 to ${maxReplayIntervalSeconds} (0 or empty: off), got "${raw}".`);
  }
  return value;
}

/** The product's JSON Web Key Set: https (http only on loopback, for development). */
export function parseJwksUrl(raw: string, name: string): URL {
  const parsed = parseAbsoluteUrl(raw, name, 'https://login.example.com/.well-known/jwks.json');
  if (parsed.protocol !== 'https:' && !(parsed.protocol === 'http:' && isLoopbackHost(parsed.hostname))) {
    throw new ConfigError(`${name} must be an https:// URL (http:// only for 127.0.0.1 or localhost), got "${parsed.toString()}".`);
  }
  return parsed;
}

/** Comma-separated exact origins; a wildcard would let any site spend a signed-in user's session. */
export function parseOrigins(raw: string, name: string): string[] {
  if (!raw.trim()) return [];
  return raw.split(',').map((entry) => {
    const text = entry.trim();
    let parsed: URL | undefined;
    try {
      parsed = new URL(text);
    } catch {
      parsed = undefined;
    }
    if (!parsed || text.includes('*') || !/^https?:$/.test(parsed.protocol) || parsed.origin !== text.replace(/\/$/, '')) {
      throw new ConfigError(`${name} takes exact origins such as https://app.example.com (scheme, host and port; no path, no wildcard), separated by commas; "${text}" is not one.`);
    }
    return parsed.origin;
  });
}

/** A Checkout return URL: absolute http(s); Stripe fills in {CHECKOUT_SESSION_ID} if it is there. */
export function parseCheckoutReturnUrl(raw: string, name: string): string {
  const parsed = parseAbsoluteUrl(raw, name, 'https://app.example.com/billing/?checkout=success');
  if (!/^https?:$/.test(parsed.protocol)) throw new ConfigError(`${name} must be an http(s) URL, got "${raw}".`);
  return raw;
}

function parseAbsoluteUrl(raw: string, name: string, example: string): URL {
  try {
    return new URL(raw);
  } catch {
    throw new ConfigError(`${name} must be an absolute URL such as ${example}, got "${raw}".`);
  }
}

function url(env: Env, name: string, fallback: string): URL {
  return parseAbsoluteUrl(nonEmpty(env[name]) ?? fallback, name, fallback);
}
