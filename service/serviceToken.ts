import { createHash, timingSafeEqual } from 'node:crypto';
import type Koa from 'koa';
import { bearerToken } from './users/auth';

/**
 * Service-to-service routes (the product's back end spending credits) take `Authorization: Bearer
 * <SERVICE_API_TOKEN>`. Both sides are hashed first, so the comparison takes the same time whatever the
 * length or content of what was sent.
 */
export function serviceTokenGuard(expectedToken: string): Koa.Middleware {
  const expected = digest(expectedToken);
  return async (ctx, next) => {
    const given = bearerToken(ctx.get('authorization'));
    if (given === undefined || !timingSafeEqual(digest(given), expected)) {
      ctx.set('WWW-Authenticate', `Bearer realm="service"${given === undefined ? '' : ', error="invalid_token"'}`);
      ctx.throw(401, 'This route is for the product\'s back end: send "Authorization: Bearer <SERVICE_API_TOKEN>".', { reason: 'unauthenticated' });
    }
    await next();
  };
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}
