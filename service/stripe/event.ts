/** The part of a Stripe event envelope this service relies on; `data.object` is read by the readers of its kind. */
export interface StripeEvent {
  id: string;
  type: string;
  livemode: boolean;
  /** Unix seconds, one-second resolution. */
  created: number;
  data: { object: Record<string, unknown> };
}
