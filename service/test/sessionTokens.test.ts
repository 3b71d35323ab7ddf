/**
 * Every way a session token is refused, and the ways it is accepted: HS256 with the shared key, RS256 and
 * ES256 with keys of a JSON Web Key Set served by a real local HTTP server, `exp` required, issuer and
 * audience when configured, a clock tolerance of at most 30 s.
 */
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { base64url, exportJWK, exportSPKI, generateKeyPair, SignJWT, UnsecuredJWT, type CryptoKey, type JWK } from 'jose';
import { clockToleranceSeconds, type SessionTokenOptions } from '../users/sessionTokens';
import { startTestApp, type TestApp } from './support/testApp';
import { createTestDatabase, type TestDatabase } from './support/testDatabase';

const secret = 'session-tokens-test-secret-0123456789abcdef';
const secretKey = new TextEncoder().encode(secret);
const issuer = 'https://login.example.com';
const audience = 'credits-api';
const creditsPath = '/api/v1/billing/credits';

interface SigningKey {
  kid: string;
  alg: 'RS256' | 'ES256';
  privateKey: CryptoKey;
  publicJwk: JWK;
}

/** A JSON Web Key Set over real HTTP, as an identity provider serves it; it can be stopped. */
class KeySetServer {
  private readonly server: http.Server;
  requests = 0;
  constructor(private readonly keys: JWK[]) {
    this.server = http.createServer((request, response) => {
      this.requests++;
      if (request.url !== '/.well-known/jwks.json') {
        response.writeHead(404).end();
        return;
      }
      response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: this.keys }));
    });
  }
  async start(): Promise<URL> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return new URL(`http://127.0.0.1:${(this.server.address() as AddressInfo).port}/.well-known/jwks.json`);
  }
  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

async function signingKey(alg: 'RS256' | 'ES256'): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const kid = `${alg.toLowerCase()}-${randomUUID()}`;
  return { kid, alg, privateKey, publicJwk: { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' } };
}

let database: TestDatabase;
let rsa: SigningKey;
let ec: SigningKey;
let stranger: SigningKey;
let keySet: KeySetServer;
let hsApp: TestApp;
let hsStrictApp: TestApp;
let jwksApp: TestApp;
let unreachableJwksApp: TestApp;

async function appWith(sessionTokens: SessionTokenOptions): Promise<TestApp> {
  return startTestApp(database.db, { sessionTokens });
}

beforeAll(async () => {
  database = await createTestDatabase();
  [rsa, ec, stranger] = await Promise.all([signingKey('RS256'), signingKey('ES256'), signingKey('RS256')]);
  keySet = new KeySetServer([rsa.publicJwk, ec.publicJwk]);
  const keySetUrl = await keySet.start();
  const gone = new KeySetServer([]);
  const goneUrl = await gone.start();
  await gone.stop();
  [hsApp, hsStrictApp, jwksApp, unreachableJwksApp] = await Promise.all([
    appWith({ key: { kind: 'secret', secret } }),
    appWith({ key: { kind: 'secret', secret }, issuer, audience }),
    appWith({ key: { kind: 'jwks', url: keySetUrl }, issuer, audience }),
    appWith({ key: { kind: 'jwks', url: goneUrl } }),
  ]);
});
afterAll(async () => {
  await Promise.all([hsApp, hsStrictApp, jwksApp, unreachableJwksApp].map((app) => app.close()));
  await keySet.stop();
  await database.drop();
});

const nowSeconds = () => Math.floor(Date.now() / 1000);

interface Claims {
  sub?: string;
  exp?: number | null;
  nbf?: number;
  iss?: string;
  aud?: string;
}

/** A token with the given claims; `exp` defaults to 10 minutes from now, `null` leaves it out. */
function claimsOf(claims: Claims): Record<string, unknown> {
  const payload: Record<string, unknown> = { sub: claims.sub ?? `user_${randomUUID()}`, iat: nowSeconds() };
  if (claims.exp !== null) payload.exp = claims.exp ?? nowSeconds() + 600;
  if (claims.nbf !== undefined) payload.nbf = claims.nbf;
  if (claims.iss !== undefined) payload.iss = claims.iss;
  if (claims.aud !== undefined) payload.aud = claims.aud;
  return payload;
}

function hsToken(claims: Claims = {}, options: { key?: Uint8Array; alg?: string } = {}): Promise<string> {
  return new SignJWT(claimsOf(claims)).setProtectedHeader({ alg: options.alg ?? 'HS256' }).sign(options.key ?? secretKey);
}

function keyToken(key: SigningKey, claims: Claims = {}, kid = key.kid): Promise<string> {
  return new SignJWT(claimsOf({ iss: issuer, aud: audience, ...claims })).setProtectedHeader({ alg: key.alg, kid }).sign(key.privateKey);
}

async function call(app: TestApp, authorization: string | undefined) {
  const response = await fetch(`${app.url}${creditsPath}`, { headers: authorization === undefined ? {} : { authorization } });
  return { status: response.status, headers: response.headers, body: (await response.json()) as Record<string, unknown> };
}

describe('HS256 with the shared key', () => {
  test('a token signed with the key, with `sub` and `exp`, is the user', async () => {
    const user = `user_${randomUUID()}`;
    const answer = await call(hsApp, `Bearer ${await hsToken({ sub: user })}`);
    expect(answer.status).toBe(200);
    expect(answer.body.user_id).toBe(user);
  });

  test('every kind of bad token gets the same 401 naming the Bearer scheme and no detail', async () => {
    const valid = await hsToken();
    const [header, , signature] = valid.split('.');
    const forged = base64url.encode(JSON.stringify(claimsOf({ sub: 'victim' })));
    const rsaPublicPem = await exportSPKI((await generateKeyPair('RS256', { extractable: true })).publicKey);
    const bad: Record<string, string> = {
      garbage: 'Bearer not-a-jwt',
      'payload swapped under a genuine signature': `Bearer ${header}.${forged}.${signature}`,
      'signed with another key': `Bearer ${await hsToken({}, { key: new TextEncoder().encode('another-secret-0123456789abcdef0123') })}`,
      'HS512 with the right key': `Bearer ${await hsToken({}, { alg: 'HS512' })}`,
      'alg none': `Bearer ${new UnsecuredJWT(claimsOf({})).encode()}`,
      'RS256 from a key nobody configured': `Bearer ${await keyToken(stranger)}`,
      'HS256 keyed with a public key (algorithm confusion)': `Bearer ${await hsToken({}, { key: new TextEncoder().encode(rsaPublicPem) })}`,
      'without exp': `Bearer ${await hsToken({ exp: null })}`,
      'expired beyond the tolerance': `Bearer ${await hsToken({ exp: nowSeconds() - clockToleranceSeconds - 30 })}`,
      'not valid yet (nbf beyond the tolerance)': `Bearer ${await hsToken({ nbf: nowSeconds() + clockToleranceSeconds + 60 })}`,
      'without sub': `Bearer ${await new SignJWT({ exp: nowSeconds() + 600 }).setProtectedHeader({ alg: 'HS256' }).sign(secretKey)}`,
      'an empty sub': `Bearer ${await hsToken({ sub: ' ' })}`,
      'a sub too long to be a user id': `Bearer ${await hsToken({ sub: 'u'.repeat(201) })}`,
    };
    const bodies = new Set<string>();
    for (const [name, authorization] of Object.entries(bad)) {
      const answer = await call(hsApp, authorization);
      expect({ name, status: answer.status }).toEqual({ name, status: 401 });
      expect({ name, challenge: answer.headers.get('www-authenticate') }).toEqual({ name, challenge: 'Bearer realm="billing", error="invalid_token"' });
      bodies.add(JSON.stringify(answer.body));
    }
    expect(bodies.size).toBe(1);
    expect([...bodies][0]).not.toMatch(/claim|signature|algorithm|HS512|JWS|\bexp\b|nbf|none|subject|victim/i);
  });

  test('a missing, empty or non-Bearer Authorization header gets 401 with the bare challenge', async () => {
    for (const authorization of [undefined, '', 'Bearer', 'Bearer ', `Basic ${Buffer.from('user:pass').toString('base64')}`, `Token ${await hsToken()}`]) {
      const answer = await call(hsApp, authorization);
      expect({ authorization, status: answer.status }).toEqual({ authorization, status: 401 });
      expect(answer.headers.get('www-authenticate')).toBe('Bearer realm="billing"');
    }
  });

  test('clocks may differ by the tolerance: a token expired 10 s ago still passes, the scheme in any case', async () => {
    expect(clockToleranceSeconds).toBeLessThanOrEqual(30);
    expect((await call(hsApp, `bearer ${await hsToken({ exp: nowSeconds() - 10 })}`)).status).toBe(200);
    expect((await call(hsApp, `BEARER ${await hsToken({ nbf: nowSeconds() + 10 })}`)).status).toBe(200);
  });

  test('with an issuer and audience configured, tokens of another issuer or audience, or without them, get 401', async () => {
    expect((await call(hsStrictApp, `Bearer ${await hsToken({ iss: issuer, aud: audience })}`)).status).toBe(200);
    for (const claims of [{ iss: 'https://evil.example.com', aud: audience }, { iss: issuer, aud: 'another-api' }, { aud: audience }, { iss: issuer }]) {
      expect({ claims, status: (await call(hsStrictApp, `Bearer ${await hsToken(claims)}`)).status }).toEqual({ claims, status: 401 });
    }
  });
});

describe('RS256 and ES256 with a JSON Web Key Set', () => {
  test('tokens signed with either key of the set are accepted', async () => {
    for (const key of [rsa, ec]) {
      const user = `user_${randomUUID()}`;
      const answer = await call(jwksApp, `Bearer ${await keyToken(key, { sub: user })}`);
      expect({ alg: key.alg, status: answer.status, user: answer.body.user_id }).toEqual({ alg: key.alg, status: 200, user });
    }
  });

  test('a key outside the set, an unknown kid, the shared-key algorithm, a wrong issuer or audience, or no exp get 401', async () => {
    const bad: Record<string, string> = {
      'a stranger’s key': await keyToken(stranger),
      'a stranger’s key under a known kid': await keyToken(stranger, {}, rsa.kid),
      'an unknown kid': await keyToken(rsa, {}, 'no-such-kid'),
      HS256: await hsToken({ iss: issuer, aud: audience }),
      'another issuer': await keyToken(ec, { iss: 'https://evil.example.com' }),
      'another audience': await keyToken(ec, { aud: 'another-api' }),
      'without exp': await keyToken(rsa, { exp: null }),
      expired: await keyToken(rsa, { exp: nowSeconds() - 120 }),
    };
    for (const [name, token] of Object.entries(bad)) {
      const answer = await call(jwksApp, `Bearer ${token}`);
      expect({ name, status: answer.status }).toEqual({ name, status: 401 });
    }
  });

  test('when the key set cannot be fetched, the answer is 503 with Retry-After, not a 401 blaming the token', async () => {
    const answer = await call(unreachableJwksApp, `Bearer ${await keyToken(rsa)}`);
    expect(answer.status).toBe(503);
    expect(answer.headers.get('retry-after')).toMatch(/^\d+$/);
    expect(answer.body.error).toBe('sign_in_keys_unavailable');
  });
});
