import type Koa from 'koa';
import { SessionRejected, type Session, type SessionVerifier } from './sessionTokens';

const realm = 'billing';
const keySetRetryAfterSeconds = 5;

/** `Authorization: Bearer <token>` (the scheme in any case), or undefined. */
export function bearerToken(header: string): string | undefined {
  return /^bearer\s+(\S+)\s*$/i.exec(header)?.[1];
}

/**
 * The signed-in user of a request, from `Authorization: Bearer <session token>` only (never from the URL).
 * Every failure is a 401 naming the Bearer scheme (RFC 6750), or a 503 when the key set is unreachable.
 */
export function userAuthenticator(verify: SessionVerifier) {
  return async function authenticate(ctx: Koa.Context): Promise<Session> {
    const token = bearerToken(ctx.get('authorization'));
    if (!token) {
      ctx.set('WWW-Authenticate', `Bearer realm="${realm}"`);
      return ctx.throw(401, 'Missing bearer token: send "Authorization: Bearer <session token>".', { reason: 'unauthenticated' });
    }
    return verifyOrThrow(ctx, verify, token);
  };
}

export async function verifyOrThrow(ctx: Koa.Context, verify: SessionVerifier, token: string): Promise<Session> {
  try {
    return await verify(token);
  } catch (error) {
    if (!(error instanceof SessionRejected)) throw error;
    if (error.status === 503) {
      ctx.set('Retry-After', String(keySetRetryAfterSeconds));
      return ctx.throw(503, error.message, { reason: 'sign_in_keys_unavailable' });
    }
    ctx.set('WWW-Authenticate', `Bearer realm="${realm}", error="invalid_token"`);
    return ctx.throw(401, error.message, { reason: 'invalid_token' });
  }
}
