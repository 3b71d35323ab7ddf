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
  stripeMode: StripeMode;
  /** Absent outside production: a development secret is generated under `dataDir`. */
  webhookSecret: SecretSource | undefined;
  stripeApiKey: string | undefined;
  stripeApiBase: URL;
  logLevel: string;
  webhookMaxBodyBytes: number;
  creditCatalogFile: string | undefined;
  /** HS256 key for user routes; absent disables them. */
  authJwtSecret: string | undefined;
  dataDir: string;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

const defaultPort = 3000;
const defaultWebhookMaxBodyBytes = 1024 * 1024;
const defaultDatabasePoolMax = 10;
const defaultStripeApiBase = 'https://api.stripe.com';
const logLevels = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

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

  const stripeModeRaw = nonEmpty(env.STRIPE_MODE);
  if (stripeModeRaw !== undefined && stripeModeRaw !== 'test' && stripeModeRaw !== 'live') {
    throw new ConfigError(`STRIPE_MODE must be "test" or "live", got "${stripeModeRaw}".`);
  }
  if (production && stripeModeRaw === undefined) missing.push('STRIPE_MODE ("test" or "live")');
  const stripeMode: StripeMode = stripeModeRaw ?? 'test';

  const webhookSecret = secretSource(env, 'STRIPE_WEBHOOK_SECRET');
  if (production && webhookSecret === undefined) missing.push('STRIPE_WEBHOOK_SECRET or STRIPE_WEBHOOK_SECRET_FILE');

  const stripeApiKey = readSecretValue(env, 'STRIPE_API_KEY');
  if (production && stripeApiKey === undefined) missing.push('STRIPE_API_KEY or STRIPE_API_KEY_FILE');
  if (stripeApiKey !== undefined) checkApiKeyMode(stripeApiKey, stripeMode);

  if (missing.length > 0) {
    throw new ConfigError(
      `Missing required setting${missing.length > 1 ? 's' : ''} in production: ${missing.join(', ')}. ` +
        'Set each as an environment variable; where an X_FILE form is named, it may instead be the path of a file that holds the value.',
    );
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
    stripeMode,
    webhookSecret,
    stripeApiKey,
    stripeApiBase: url(env, 'STRIPE_API_BASE', defaultStripeApiBase),
    logLevel,
    webhookMaxBodyBytes: integer(env, 'WEBHOOK_MAX_BODY_BYTES', defaultWebhookMaxBodyBytes, 1, 64 * 1024 * 1024),
    creditCatalogFile: nonEmpty(env.CREDIT_CATALOG_FILE),
    authJwtSecret: readSecretValue(env, 'AUTH_JWT_SECRET'),
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
function readSecretValue(env: Env, name: string): string | undefined {
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

function checkApiKeyMode(key: string, mode: StripeMode): void {
  const match = /^(sk|rk)_(test|live)_/.exec(key);
  if (!match) {
    throw new ConfigError('STRIPE_API_KEY must be a Stripe secret or restricted key (sk_… or rk_…).');
  }
  if (match[2] !== mode) {
    throw new ConfigError(`STRIPE_API_KEY is a ${match[2]}-mode key but STRIPE_MODE is "${mode}"; use a ${mode}-mode key.`);
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

function url(env: Env, name: string, fallback: string): URL {
  const raw = nonEmpty(env[name]) ?? fallback;
  try {
    return new URL(raw);
  } catch {
    throw new ConfigError(`${name} must be an absolute URL such as ${fallback}, got "${raw}".`);
  }
}
