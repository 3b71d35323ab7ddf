import type Koa from 'koa';
import { jwtVerify, SignJWT } from 'jose';

export interface UserSession {
  userId: string;
  /** When the token expires (ms since epoch), if it says; open streams close then. */
  expiresAtMillis: number | undefined;
}

/**
 * Our product's user sessions are HS256 JWTs whose `sub` is the user id (the same id sent to Checkout as
 * client_reference_id). Browsers' EventSource cannot set headers, so the stream alone also accepts
 * `?access_token=` (nginx logs paths without query strings).
 */
export function userAuthenticator(jwtSecret: string) {
  const key = hs256Key(jwtSecret);
  return async function authenticate(ctx: Koa.Context, options: { allowQueryToken?: boolean } = {}): Promise<UserSession> {
    const token = bearerToken(ctx.get('authorization')) ?? (options.allowQueryToken ? queryToken(ctx) : undefined);
    ctx.set('WWW-Authenticate', 'Bearer');
    if (!token) ctx.throw(401, 'Missing bearer token: send "Authorization: Bearer <session token>".');
    try {
      const { payload } = await jwtVerify(token, key, { algorithms: ['HS256'] });
      if (typeof payload.sub === 'string' && payload.sub) {
        ctx.remove('WWW-Authenticate');
        return { userId: payload.sub, expiresAtMillis: typeof payload.exp === 'number' ? payload.exp * 1000 : undefined };
      }
    } catch {
      // Expired, tampered or foreign token: same answer, no detail for an attacker.
    }
    return ctx.throw(401, 'Invalid or expired session token: sign in again.');
  };
}

/**
 * A session token as the product's sign-in issues it, and as `authenticate` accepts it. The service never
 * issues one; the development scripts (`make-token`, `send-test-event`) do, with the service's key.
 */
export function signSessionToken(jwtSecret: string, userId: string, ttlSeconds: number, issuedAtSeconds = Math.floor(Date.now() / 1000)): Promise<string> {
  return new SignJWT({})
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(userId)
    .setIssuedAt(issuedAtSeconds)
    .setExpirationTime(issuedAtSeconds + ttlSeconds)
    .sign(hs256Key(jwtSecret));
}

const hs256Key = (jwtSecret: string) => new TextEncoder().encode(jwtSecret);

function bearerToken(header: string): string | undefined {
  const match = /^bearer\s+(\S+)\s*$/i.exec(header);
  return match?.[1];
}

function queryToken(ctx: Koa.Context): string | undefined {
  const value = ctx.query.access_token;
  return typeof value === 'string' && value ? value : undefined;
}
