import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** One registry per app instance, so several instances can live in one process (tests). */
export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  return {
    registry,
    events: new Counter({
      name: 'stripe_webhook_events_total',
      help: 'Authentic webhook deliveries by event type and outcome (processed, duplicate, ignored, unmatched, failed, unavailable, mode_mismatch; type "unparsed" with outcome malformed for bodies that are not events).',
      labelNames: ['type', 'outcome'] as const,
      registers: [registry],
    }),
    signatureFailures: new Counter({
      name: 'stripe_webhook_signature_failures_total',
      help: 'Rejected webhook deliveries by reason.',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    secretVerifications: new Counter({
      name: 'stripe_webhook_secret_verifications_total',
      help: 'Successful signature checks per signing secret (by fingerprint): an old secret at zero can be retired.',
      labelNames: ['fingerprint'] as const,
      registers: [registry],
    }),
    handlerSeconds: new Histogram({
      name: 'stripe_webhook_handler_duration_seconds',
      help: 'Time to apply one event in the database.',
      labelNames: ['type'] as const,
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
    eventLagSeconds: new Histogram({
      name: 'stripe_webhook_event_lag_seconds',
      help: 'Delay between event.created at Stripe and its receipt here.',
      buckets: [1, 5, 15, 60, 300, 1800, 3600, 21600, 86400, 259200],
      registers: [registry],
    }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
