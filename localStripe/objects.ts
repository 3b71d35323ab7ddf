/**
 * The project's own builders of Stripe objects (API 2025-03-31.basil), for tests, scripts and the local
 * Stripe. Each builder returns a fresh object with new random ids, complete as Stripe sends it, with the
 * fields our service reads set to coherent defaults; the caller's deep-partial overrides go on top
 * (plain objects merge; arrays, null and scalars replace).
 */
export * from './buildingBlocks';
export * from './checkoutSessions';
export * from './subscriptions';
export * from './invoices';
export * from './payments';
export * from './events';
