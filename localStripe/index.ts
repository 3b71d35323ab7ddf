/**
 * The local Stripe, this project's stand-in for Stripe (README: "The local Stripe"):
 * - startLocalStripe(): the API server, hosted checkout page and webhook delivery (server.ts);
 * - the builders of Stripe objects and events (objects.ts) and Stripe's webhook signing (signing.ts).
 * Tests, `npm start` in development (loaded only there) and the local Pulumi stack use it; production code
 * never needs it.
 */
export * from './server';
export * from './objects';
export * from './signing';
