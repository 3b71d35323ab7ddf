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
