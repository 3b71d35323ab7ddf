import Router from '@koa/router';

/**
 * Every router of the app: strict (a trailing slash is another path) and case-sensitive. Only the exact
 * spelling of a route reaches its handler, so the edge's rules for exact paths (the webhook's rate
 * limit and POST-only rule) cannot be walked around with `/webhook/` or `/WEBHOOK`.
 */
export function createRouter(): Router {
  return new Router({ strict: true, sensitive: true });
}
