/** `npm run make-token`: a development session token, signed with the key the service uses; never in production. */
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { decodeProtectedHeader, jwtVerify } from 'jose';
import { devSessionKeyPath } from '../../service/devSecret';
import { runScript } from '../../service/test/support/scriptProcess';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'make-token-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const makeToken = (args: string[], env: Record<string, string> = {}) => runScript('scripts/make-token.ts', args, { PATH: process.env.PATH, DATA_DIR: dir, ...env });

const key = (text: string) => new TextEncoder().encode(text);

test('without AUTH_JWT_SECRET it signs with the development key of npm start (made if missing, then reused): HS256, sub, iat, exp an hour on', async () => {
  const first = await makeToken(['--user', 'alice']);
  expect(first.code).toBe(0);
  const devKey = (await readFile(devSessionKeyPath(dir), 'utf8')).trim();
  const token = first.stdout.trim();
  expect(decodeProtectedHeader(token)).toEqual({ alg: 'HS256', typ: 'JWT' });
  const { payload } = await jwtVerify(token, key(devKey), { algorithms: ['HS256'] });
  expect(payload.sub).toBe('alice');
  expect(payload.exp! - payload.iat!).toBe(3600);
  expect(first.stderr).toBe(''); // Nothing but the token when it is captured, as in $(npm run -s make-token …).
  expect(first.stdout).not.toContain(devKey);

  const second = await makeToken(['--user', 'bob', '--ttl', '30m']);
  expect((await readFile(devSessionKeyPath(dir), 'utf8')).trim()).toBe(devKey);
  const { payload: bob } = await jwtVerify(second.stdout.trim(), key(devKey));
  expect([bob.sub, bob.exp! - bob.iat!]).toEqual(['bob', 1800]);
});

test('with AUTH_JWT_SECRET_FILE it signs with that key, as the service configured so verifies', async () => {
  const keyFile = path.join(dir, 'auth_jwt_secret');
  await writeFile(keyFile, 'a-configured-session-key-of-enough-length-0123456789\n');
  const result = await makeToken(['--user', 'carol', '--ttl', '90s'], { AUTH_JWT_SECRET_FILE: keyFile });
  const { payload } = await jwtVerify(result.stdout.trim(), key('a-configured-session-key-of-enough-length-0123456789'));
  expect([payload.sub, payload.exp! - payload.iat!]).toEqual(['carol', 90]);
  expect(await readdir(dir)).toEqual(['auth_jwt_secret']);
});

test('with NODE_ENV=production it refuses with a clear message, prints no token and makes no key', async () => {
  const result = await makeToken(['--user', 'alice'], { NODE_ENV: 'production', AUTH_JWT_SECRET: 'the-production-session-key' });
  expect(result.code).toBe(1);
  expect(result.stdout).toBe('');
  expect(result.stderr).toContain('make-token is for development only and refuses to run with NODE_ENV=production');
  expect(await readdir(dir)).toEqual([]);
});

test('with AUTH_JWT_ISSUER and AUTH_JWT_AUDIENCE the token carries them, as the service then requires', async () => {
  const secret = 'a-configured-session-key-of-enough-length-0123456789';
  const result = await makeToken(['--user', 'dave'], { AUTH_JWT_SECRET: secret, AUTH_JWT_ISSUER: 'https://login.example.com', AUTH_JWT_AUDIENCE: 'credits-api' });
  const { payload } = await jwtVerify(result.stdout.trim(), key(secret), { issuer: 'https://login.example.com', audience: 'credits-api' });
  expect(payload.sub).toBe('dave');
});

test('with AUTH_JWKS_URL it refuses: only the product’s sign-in holds that private key', async () => {
  const result = await makeToken(['--user', 'erin'], { AUTH_JWKS_URL: 'https://login.example.com/.well-known/jwks.json' });
  expect(result.code).toBe(1);
  expect(result.stdout).toBe('');
  expect(result.stderr).toContain('AUTH_JWKS_URL');
});
