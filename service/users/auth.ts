import type Koa from 'koa';
import { jwtVerify } from 'jose';

/**
 * Our product's user sessions are HS256 JWTs whose `sub` is the user id (the same id sent to Checkout as
 * client_reference_id). Browsers' EventSource cannot set headers, so the stream also accepts `?access_token=`.
 */
export function userAuthenticator(jwtSecret: string) {
  const key = new TextEncoder().encode(jwtSecret);
  return async function authenticate(ctx: Koa.Context): Promise<string> {
    const header = ctx.get('authorization');
    const token = header.startsWith('Bearer ') ? header.slice('Bearer '.length).trim() : queryToken(ctx);
    if (!token) ctx.throw(401, 'Missing bearer token: send "Authorization: Bearer <session token>".');
    try {
      const { payload } = await jwtVerify(token, key, { algorithms: ['HS256'] });
      if (typeof payload.sub === 'string' && payload.sub) return payload.sub;
    } catch {
      // Expired, tampered or foreign token: same answer, no detail for an attacker.
    }
    return ctx.throw(401, 'Invalid or expired session token: sign in again.');
  };
}

function queryToken(ctx: Koa.Context): string | undefined {
  const value = ctx.query.access_token;
  return typeof value === 'string' && value ? value : undefined;
}
