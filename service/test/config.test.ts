import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ConfigError, loadConfig } from '../config';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'config-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const production = {
  NODE_ENV: 'production',
  DATABASE_URL: 'postgres://app@db:5432/credits',
  STRIPE_MODE: 'live',
  STRIPE_WEBHOOK_SECRET: 'whsec_live_x',
  STRIPE_API_KEY: 'sk_live_x',
};

test('development defaults need no settings at all', () => {
  const config = loadConfig({});
  expect(config).toMatchObject({ production: false, port: 3000, host: '127.0.0.1', stripeMode: 'test', webhookMaxBodyBytes: 1048576 });
  expect(config.databaseUrl).toBeUndefined();
  expect(config.webhookSecret).toBeUndefined();
  expect(config.stripeApiBase.toString()).toBe('https://api.stripe.com/');
});

test('a complete production configuration loads', () => {
  const config = loadConfig(production);
  expect(config).toMatchObject({ production: true, host: '0.0.0.0', stripeMode: 'live', stripeApiKey: 'sk_live_x' });
  expect(config.webhookSecret).toEqual({ kind: 'value', value: 'whsec_live_x' });
});

test.each(['DATABASE_URL', 'STRIPE_MODE', 'STRIPE_WEBHOOK_SECRET', 'STRIPE_API_KEY'])('production without %s fails naming it and its _FILE form', (name) => {
  const env: Record<string, string | undefined> = { ...production, [name]: undefined };
  if (name === 'STRIPE_MODE') env.STRIPE_API_KEY = 'sk_test_x';
  expect(() => loadConfig(env)).toThrow(ConfigError);
  expect(() => loadConfig(env)).toThrow(name);
});

test('every missing production setting is named at once, each with the forms it is read from', () => {
  expect(() => loadConfig({ NODE_ENV: 'production' })).toThrow(
    'DATABASE_URL or DATABASE_URL_FILE, STRIPE_MODE ("test" or "live"), STRIPE_WEBHOOK_SECRET or STRIPE_WEBHOOK_SECRET_FILE, STRIPE_API_KEY or STRIPE_API_KEY_FILE.',
  );
});

test('a missing STRIPE_MODE is not said to have a file form, which is not read', () => {
  expect(() => loadConfig({ ...production, STRIPE_MODE: undefined, STRIPE_API_KEY: 'sk_test_x' })).toThrow(ConfigError);
  let message = '';
  try {
    loadConfig({ ...production, STRIPE_MODE: undefined, STRIPE_API_KEY: 'sk_test_x' });
  } catch (error) {
    message = (error as Error).message;
  }
  expect(message).toContain('STRIPE_MODE ("test" or "live")');
  expect(message).not.toMatch(/STRIPE_MODE_FILE|\*_FILE/);
});

test('setting both X and X_FILE is an error', () => {
  expect(() => loadConfig({ STRIPE_WEBHOOK_SECRET: 'whsec_a', STRIPE_WEBHOOK_SECRET_FILE: '/run/secrets/x' })).toThrow(
    'Both STRIPE_WEBHOOK_SECRET and STRIPE_WEBHOOK_SECRET_FILE are set',
  );
});

test('secrets are read from *_FILE, trimmed of the newline `echo` leaves', async () => {
  const keyFile = path.join(dir, 'stripe_api_key');
  const urlFile = path.join(dir, 'database_url');
  await writeFile(keyFile, 'sk_test_from_file\n');
  await writeFile(urlFile, 'postgres://app:pw@db/credits\n');
  const config = loadConfig({ STRIPE_API_KEY_FILE: keyFile, DATABASE_URL_FILE: urlFile });
  expect(config.stripeApiKey).toBe('sk_test_from_file');
  expect(config.databaseUrl).toBe('postgres://app:pw@db/credits');
});

test('the webhook secret file is kept as a path, to be watched', () => {
  expect(loadConfig({ STRIPE_WEBHOOK_SECRET_FILE: 'secrets/stripe_webhook_secret' }).webhookSecret).toEqual({
    kind: 'file',
    path: path.resolve('secrets/stripe_webhook_secret'),
  });
});

test('the database password file is kept as a path, to be read for each connection; it must hold a password from the start', async () => {
  const passwordFile = path.join(dir, 'database_password');
  await writeFile(passwordFile, 'pw\n');
  expect(loadConfig({ DATABASE_PASSWORD_FILE: passwordFile }).databasePasswordFile).toBe(passwordFile);
  await writeFile(passwordFile, '\n');
  expect(() => loadConfig({ DATABASE_PASSWORD_FILE: passwordFile })).toThrow(/DATABASE_PASSWORD_FILE points to .*database_password, which is empty/);
  expect(() => loadConfig({ DATABASE_PASSWORD_FILE: path.join(dir, 'absent') })).toThrow(/DATABASE_PASSWORD_FILE points to .*absent, which cannot be read/);
});

test('an unreadable *_FILE names the variable and the path', () => {
  expect(() => loadConfig({ STRIPE_API_KEY_FILE: path.join(dir, 'missing') })).toThrow(/STRIPE_API_KEY_FILE points to .*missing, which cannot be read \(ENOENT\)/);
});

test('an API key of the other mode is refused without echoing the key', () => {
  const attempt = () => loadConfig({ STRIPE_MODE: 'live', STRIPE_API_KEY: 'sk_test_secretvalue' });
  expect(attempt).toThrow('STRIPE_API_KEY is a test-mode key but STRIPE_MODE is "live"');
  try {
    attempt();
  } catch (error) {
    expect((error as Error).message).not.toContain('secretvalue');
  }
});

test('a database URL with a password is never echoed in its error', () => {
  try {
    loadConfig({ DATABASE_URL: 'mysql://root:hunter2@db/x' });
    throw new Error('expected a ConfigError');
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as Error).message).not.toContain('hunter2');
  }
});

test.each([
  [{ PORT: 'eighty' }, 'PORT must be a whole number'],
  [{ PORT: '70000' }, 'PORT must be a whole number from 0 to 65535'],
  [{ STRIPE_MODE: 'sandbox' }, 'STRIPE_MODE must be "test" or "live"'],
  [{ WEBHOOK_MAX_BODY_BYTES: '-1' }, 'WEBHOOK_MAX_BODY_BYTES must be a whole number'],
  [{ LOG_LEVEL: 'loud' }, 'LOG_LEVEL must be one of'],
  [{ STRIPE_API_BASE: 'not a url' }, 'STRIPE_API_BASE must be an absolute URL'],
])('%p is refused with a message that says what is expected', (env, message) => {
  expect(() => loadConfig(env)).toThrow(message);
});

describe('periodic replay (STRIPE_REPLAY_INTERVAL_SECONDS)', () => {
  test('is off unless set; 0 or empty is off too', () => {
    expect(loadConfig(production).stripeReplayIntervalSeconds).toBeUndefined();
    expect(loadConfig({ ...production, STRIPE_REPLAY_INTERVAL_SECONDS: '0' }).stripeReplayIntervalSeconds).toBeUndefined();
    expect(loadConfig({ ...production, STRIPE_REPLAY_INTERVAL_SECONDS: ' ' }).stripeReplayIntervalSeconds).toBeUndefined();
    expect(loadConfig({ ...production, STRIPE_REPLAY_INTERVAL_SECONDS: '300' }).stripeReplayIntervalSeconds).toBe(300);
  });

  test.each(['-5', '1.5', 'five', '86401'])('%p is refused, naming the variable and the range', (raw) => {
    expect(() => loadConfig({ ...production, STRIPE_REPLAY_INTERVAL_SECONDS: raw })).toThrow('STRIPE_REPLAY_INTERVAL_SECONDS must be a whole number of seconds from 1 to 86400');
  });

  test('needs a Stripe API key to list events, except with the local Stripe of development', () => {
    expect(() => loadConfig({ STRIPE_API_BASE: 'http://127.0.0.1:12111', STRIPE_REPLAY_INTERVAL_SECONDS: '60' })).toThrow('STRIPE_REPLAY_INTERVAL_SECONDS needs STRIPE_API_KEY');
    expect(loadConfig({ STRIPE_REPLAY_INTERVAL_SECONDS: '60' })).toMatchObject({ useLocalStripe: true, stripeReplayIntervalSeconds: 60 });
  });
});

describe('session tokens, the service token, CORS and Checkout return URLs', () => {
  test('a session key or service token shorter than 32 bytes is refused at start-up, naming the variable', () => {
    expect(() => loadConfig({ AUTH_JWT_SECRET: 'short-secret' })).toThrow(/AUTH_JWT_SECRET .*shorter than 32 bytes/);
    expect(() => loadConfig({ SERVICE_API_TOKEN: 'x'.repeat(31) })).toThrow(/SERVICE_API_TOKEN .*shorter than 32 bytes/);
    expect(loadConfig({ AUTH_JWT_SECRET: 'k'.repeat(32), SERVICE_API_TOKEN: 't'.repeat(32) })).toMatchObject({ authJwtSecret: 'k'.repeat(32), serviceApiToken: 't'.repeat(32) });
  });

  test('tokens are checked with a shared key or a key set, not both; a key set is fetched over https (http only on loopback)', () => {
    expect(() => loadConfig({ AUTH_JWT_SECRET: 'k'.repeat(32), AUTH_JWKS_URL: 'https://login.example.com/jwks.json' })).toThrow('keep only one');
    expect(() => loadConfig({ AUTH_JWKS_URL: 'http://login.example.com/jwks.json' })).toThrow('AUTH_JWKS_URL must be an https:// URL');
    expect(loadConfig({ AUTH_JWKS_URL: 'http://127.0.0.1:9999/jwks.json', AUTH_JWT_ISSUER: 'https://login.example.com', AUTH_JWT_AUDIENCE: 'credits' })).toMatchObject({
      authJwksUrl: new URL('http://127.0.0.1:9999/jwks.json'),
      authJwtIssuer: 'https://login.example.com',
      authJwtAudience: 'credits',
    });
  });

  test('CORS takes exact origins only: no wildcard, no path', () => {
    expect(loadConfig({ CORS_ALLOWED_ORIGINS: 'https://app.example.com, http://localhost:5173' }).corsAllowedOrigins).toEqual(['https://app.example.com', 'http://localhost:5173']);
    for (const bad of ['*', 'https://*.example.com', 'https://app.example.com/billing', 'app.example.com', 'ftp://app.example.com']) {
      expect(() => loadConfig({ CORS_ALLOWED_ORIGINS: bad })).toThrow('CORS_ALLOWED_ORIGINS takes exact origins');
    }
  });

  test('Checkout return URLs must be absolute http(s) URLs', () => {
    expect(loadConfig({ BILLING_SUCCESS_URL: 'https://app.example.com/billing?checkout=success&session_id={CHECKOUT_SESSION_ID}' }).billingSuccessUrl).toContain('{CHECKOUT_SESSION_ID}');
    expect(() => loadConfig({ BILLING_CANCEL_URL: '/billing' })).toThrow('BILLING_CANCEL_URL');
  });

  test('the local Stripe is used only in development with neither STRIPE_API_KEY nor STRIPE_API_BASE', () => {
    expect(loadConfig({}).useLocalStripe).toBe(true);
    expect(loadConfig({ STRIPE_API_KEY: 'sk_test_x' }).useLocalStripe).toBe(false);
    expect(loadConfig({ STRIPE_API_BASE: 'http://127.0.0.1:12111' }).useLocalStripe).toBe(false);
    expect(loadConfig(production).useLocalStripe).toBe(false);
  });
});
