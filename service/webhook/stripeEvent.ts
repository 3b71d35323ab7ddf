import type { StripeEvent } from '../stripe/event';

export type { StripeEvent } from '../stripe/event';

export class MalformedEventError extends Error {
  override name = 'MalformedEventError';
}

/** Parses an authentic request body; anything that is not a Stripe event envelope is a client error. */
export function parseStripeEvent(body: string): StripeEvent {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    throw new MalformedEventError('Body is not JSON: send the Stripe event exactly as Stripe delivered it.');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new MalformedEventError('Body is not a Stripe event object.');
  }
  const event = parsed as Record<string, unknown>;
  const data = event.data as Record<string, unknown> | undefined;
  const problems = [
    typeof event.id !== 'string' || !/^evt_[A-Za-z0-9_]{1,250}$/.test(event.id) ? '"id" (evt_…)' : undefined,
    event.object !== 'event' ? '"object": "event"' : undefined,
    typeof event.type !== 'string' || !/^[a-z0-9_.]{1,100}$/.test(event.type) ? '"type"' : undefined,
    typeof event.livemode !== 'boolean' ? '"livemode"' : undefined,
    typeof event.created !== 'number' || !Number.isSafeInteger(event.created) || event.created < 0 ? '"created"' : undefined,
    typeof data !== 'object' || data === null || typeof data.object !== 'object' || data.object === null || Array.isArray(data.object)
      ? '"data.object"'
      : undefined,
  ].filter((problem) => problem !== undefined);
  if (problems.length > 0) {
    throw new MalformedEventError(`Body is not a Stripe event: missing or invalid ${problems.join(', ')}.`);
  }
  return event as unknown as StripeEvent;
}
