import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Config } from './config';
import type { SessionTokenOptions } from './users/sessionTokens';

/**
 * Outside production, secrets nobody configured are made up once and kept under the data dir, so that
 * `npm start` just works and the development scripts (`send-test-event`, `make-token`) find the same ones.
 * Never used when NODE_ENV=production.
 */
export interface DevSecret {
  path: string;
  value: string;
  /** False when an earlier start made it and it was reused. */
  created: boolean;
}

/** Signs `npm run send-test-event` deliveries; the service watches the file like a configured one. */
export const devWebhookSecretPath = (dataDir: string) => path.join(dataDir, 'webhook-secret');
/** The HS256 key of development session tokens (`npm run make-token`), standing in for AUTH_JWT_SECRET. */
export const devSessionKeyPath = (dataDir: string) => path.join(dataDir, 'auth-jwt-secret');

/** The bearer token of the service-to-service routes (spending credits), standing in for SERVICE_API_TOKEN. */
export const devServiceTokenPath = (dataDir: string) => path.join(dataDir, 'service-api-token');

/** 32 random bytes: the key length HS256 asks for (RFC 7518 §3.2), as for any key we generate. */
const generatedSecretBytes = 32;

export function ensureDevWebhookSecret(dataDir: string): Promise<DevSecret> {
  return ensureDevSecret(devWebhookSecretPath(dataDir), () => `whsec_dev_${randomBytes(generatedSecretBytes).toString('hex')}`);
}

export function ensureDevSessionKey(dataDir: string): Promise<DevSecret> {
  return ensureDevSecret(devSessionKeyPath(dataDir), () => randomBytes(generatedSecretBytes).toString('hex'));
}

export function ensureDevServiceToken(dataDir: string): Promise<DevSecret> {
  return ensureDevSecret(devServiceTokenPath(dataDir), () => randomBytes(generatedSecretBytes).toString('hex'));
}

/**
 * How user session tokens are checked, as the service picks it: AUTH_JWKS_URL or AUTH_JWT_SECRET(_FILE) when
 * set, with AUTH_JWT_ISSUER/AUDIENCE; else, outside production, the development key (made on first use, so
 * `make-token` and `npm start` agree whichever runs first); in production with neither, none: the user routes
 * are off. The service, `make-token` and `send-test-event` all ask here.
 */
export async function sessionKey(
  config: Pick<Config, 'authJwksUrl' | 'authJwtSecret' | 'authJwtIssuer' | 'authJwtAudience' | 'production' | 'dataDir'>,
): Promise<{ tokens: SessionTokenOptions; devKey?: DevSecret } | undefined> {
  const claims = { issuer: config.authJwtIssuer, audience: config.authJwtAudience };
  if (config.authJwksUrl) return { tokens: { key: { kind: 'jwks', url: config.authJwksUrl }, ...claims } };
  if (config.authJwtSecret) return { tokens: { key: { kind: 'secret', secret: config.authJwtSecret }, ...claims } };
  if (config.production) return undefined;
  const devKey = await ensureDevSessionKey(config.dataDir);
  return { tokens: { key: { kind: 'secret', secret: devKey.value }, ...claims }, devKey };
}

async function ensureDevSecret(filePath: string, generate: () => string): Promise<DevSecret> {
  const existing = await readFile(filePath, 'utf8').catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return undefined;
    throw error;
  });
  const firstSecret = existing
    ?.split('\n')
    .map((line) => line.trim())
    .find(Boolean);
  if (firstSecret) return { path: filePath, value: firstSecret, created: false };

  await mkdir(path.dirname(filePath), { recursive: true });
  const value = generate();
  try {
    // Exclusive create: when `npm start` and a script race to make the file, both end up with the winner's.
    // An empty file (a start killed mid-write) is replaced.
    await writeFile(filePath, `${value}\n`, { mode: 0o600, flag: existing === undefined ? 'wx' : 'w' });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return ensureDevSecret(filePath, generate);
    throw error;
  }
  return { path: filePath, value, created: true };
}
