import type Koa from 'koa';

/** Browsers may cache a preflight answer this long. */
const preflightMaxAgeSeconds = 600;
const allowedMethods = 'GET, POST';
const allowedHeaders = 'Authorization, Content-Type, Idempotency-Key';
/** Headers a page may read from an answer besides the simple ones. */
const exposedHeaders = 'Retry-After, WWW-Authenticate, Idempotent-Replayed';

/**
 * Cross-origin access to the user routes for the product's own pages (CORS_ALLOWED_ORIGINS): an allowed
 * origin gets itself back (never `*`), a preflight is answered here, and others get no CORS headers (their
 * browser keeps the answer from them) and a 403 for a preflight. Sessions travel in the Authorization
 * header, never in cookies, so credentials mode is not allowed.
 */
export function cors(allowedOrigins: readonly string[], appliesTo: (path: string) => boolean): Koa.Middleware {
  const allowed = new Set(allowedOrigins);
  return async (ctx, next) => {
    const origin = ctx.get('origin');
    if (!origin || !appliesTo(ctx.path)) return next();
    ctx.vary('Origin');
    const isPreflight = ctx.method === 'OPTIONS' && ctx.get('access-control-request-method') !== '';
    if (!allowed.has(origin)) {
      if (isPreflight) ctx.throw(403, `Origin ${origin} may not call this API: add it to CORS_ALLOWED_ORIGINS.`, { reason: 'origin_not_allowed' });
      return next();
    }
    ctx.set('Access-Control-Allow-Origin', origin);
    if (isPreflight) {
      ctx.set({ 'Access-Control-Allow-Methods': allowedMethods, 'Access-Control-Allow-Headers': allowedHeaders, 'Access-Control-Max-Age': String(preflightMaxAgeSeconds) });
      ctx.status = 204;
      return;
    }
    ctx.set('Access-Control-Expose-Headers', exposedHeaders);
    await next();
  };
}
