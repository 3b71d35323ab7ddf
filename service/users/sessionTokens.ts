import { createRemoteJWKSet, jwtVerify, SignJWT, type JWTPayload } from 'jose';

/**
 * The product's user sessions: JWTs whose `sub` is the user id (the id Checkout gets as client_reference_id).
 * Signed HS256 with a shared key, or RS256/ES256 with a key of the product's JSON Web Key Set. A token must
 * say when it expires; issuer and audience are checked when configured.
 */
export type SessionKey = { kind: 'secret'; secret: string } | { kind: 'jwks'; url: URL };

export interface SessionTokenOptions {
  key: SessionKey;
  issuer?: string;
  audience?: string;
}

/** Only a shared key signs here: the private key behind a key set is the product's sign-in's alone. */
export type SharedKeyTokenOptions = SessionTokenOptions & { key: { kind: 'secret' } };

export interface Session {
  userId: string;
  /** When the token expires (ms since epoch): open streams close then. */
  expiresAtMillis: number;
}

/** Clocks of the product's sign-in and of this service may differ this much. */
export const clockToleranceSeconds = 30;
/** The product's user ids are short; a longer `sub` is not one of ours. */
const maxUserIdLength = 200;
const jwksTimeoutMillis = 5_000;
/** After a key set was fetched, an unknown `kid` refetches it at most this often. */
const jwksCooldownMillis = 30_000;
const jwksCacheMaxAgeMillis = 10 * 60_000;

/** Why a token was not accepted: 401 (the token's fault) or 503 (the key set could not be fetched). */
export class SessionRejected extends Error {
  override name = 'SessionRejected';
  constructor(
    readonly status: 401 | 503,
    message: string,
  ) {
    super(message);
  }
}

export type SessionVerifier = (token: string) => Promise<Session>;

export function sessionVerifier(options: SessionTokenOptions): SessionVerifier {
  const claims = { issuer: options.issuer, audience: options.audience, clockTolerance: clockToleranceSeconds, requiredClaims: ['exp', 'sub'] };
  let verify: (token: string) => Promise<JWTPayload>;
  if (options.key.kind === 'secret') {
    const secret = new TextEncoder().encode(options.key.secret);
    verify = async (token) => (await jwtVerify(token, secret, { ...claims, algorithms: ['HS256'] })).payload;
  } else {
    const keySet = createRemoteJWKSet(options.key.url, {
      timeoutDuration: jwksTimeoutMillis,
      cooldownDuration: jwksCooldownMillis,
      cacheMaxAge: jwksCacheMaxAgeMillis,
    });
    verify = async (token) => (await jwtVerify(token, keySet, { ...claims, algorithms: ['RS256', 'ES256'] })).payload;
  }
  return async (token) => {
    let payload: JWTPayload;
    try {
      payload = await verify(token);
    } catch (error) {
      if (options.key.kind === 'jwks' && keySetUnavailable(error)) throw new SessionRejected(503, 'The sign-in key set (AUTH_JWKS_URL) cannot be fetched right now; try again shortly.');
      // Expired, tampered, foreign, unsigned: one answer, no detail for an attacker.
      throw new SessionRejected(401, 'Invalid or expired session token: sign in again.');
    }
    const { sub, exp } = payload;
    if (typeof sub !== 'string' || !sub.trim() || sub.length > maxUserIdLength || typeof exp !== 'number') {
      throw new SessionRejected(401, 'Invalid or expired session token: sign in again.');
    }
    return { userId: sub, expiresAtMillis: exp * 1000 };
  };
}

/**
 * A session token as the product's sign-in issues it, and as `sessionVerifier` accepts it. The service never
 * issues one; the development scripts (`make-token`, `send-test-event`) do, with the service's key and claims.
 */
export function signSessionToken(options: SharedKeyTokenOptions, userId: string, ttlSeconds: number, issuedAtSeconds = Math.floor(Date.now() / 1000)): Promise<string> {
  const token = new SignJWT({}).setProtectedHeader({ alg: 'HS256', typ: 'JWT' }).setSubject(userId).setIssuedAt(issuedAtSeconds).setExpirationTime(issuedAtSeconds + ttlSeconds);
  if (options.issuer) token.setIssuer(options.issuer);
  if (options.audience) token.setAudience(options.audience);
  return token.sign(new TextEncoder().encode(options.key.secret));
}

/** Whether these options hold a key this process can sign with. */
export function canSign(options: SessionTokenOptions): options is SharedKeyTokenOptions {
  return options.key.kind === 'secret';
}

/**
 * The key set could not be had (timeout, refused connection, not a 200, not a key set): not the caller's
 * fault. A well-formed token whose `kid` is in no fetched set stays a 401 (ERR_JWKS_NO_MATCHING_KEY).
 */
function keySetUnavailable(error: unknown): boolean {
  const code = (error as { code?: unknown } | undefined)?.code;
  if (code === 'ERR_JWKS_TIMEOUT' || code === 'ERR_JWKS_INVALID' || code === 'ERR_JOSE_GENERIC') return true;
  // fetch() failures (connection refused, DNS) reach us as plain errors without a JOSE code.
  return !(typeof code === 'string' && code.startsWith('ERR_J'));
}
