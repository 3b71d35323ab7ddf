import { readFileSync } from 'node:fs';
import path from 'node:path';
import type Router from '@koa/router';
import { createRouter } from '../router';

/** The credits page and the widget a product embeds (README: "The credits page"). */
export const creditsPagePath = '/billing/';

const publicDir = path.join(__dirname, 'public');
const files: Record<string, string> = {
  '': 'text/html; charset=utf-8',
  'credits.js': 'text/javascript; charset=utf-8',
  'page.js': 'text/javascript; charset=utf-8',
  'credits.css': 'text/css; charset=utf-8',
};
/** The page is static: the same for every user, no secret in it; its scripts come from here only. */
const pageSecurityHeaders = {
  'Content-Security-Policy': "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
};
const maxAgeSeconds = 300;

export function creditsPageRoutes(): Router {
  // Read once at start: a few kilobytes, served as they are.
  const contents = Object.fromEntries(Object.keys(files).map((name) => [name, readFileSync(path.join(publicDir, name || 'index.html'))]));
  const router = createRouter();
  router.get('/billing', (ctx) => {
    ctx.status = 308;
    ctx.redirect(`${creditsPagePath}${ctx.querystring ? `?${ctx.querystring}` : ''}`);
  });
  for (const [name, type] of Object.entries(files)) {
    router.get(`${creditsPagePath}${name}`, (ctx) => {
      ctx.set({ ...pageSecurityHeaders, 'Cache-Control': name ? `public, max-age=${maxAgeSeconds}` : 'no-cache' });
      ctx.type = type;
      ctx.body = contents[name];
    });
  }
  return router;
}
