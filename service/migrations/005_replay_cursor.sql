-- How far replay-events (the script, or the service's periodic replay) has applied Stripe's list of events:
-- the last event applied with nothing before it left to retry. One row per mode. A replay resumes here
-- after an interruption; what it lists again applies as duplicates (stripe_events' primary key).
CREATE TABLE replay_cursor (
  livemode      boolean PRIMARY KEY,
  event_created timestamptz NOT NULL,  -- Stripe's `created` of that event (one-second resolution)
  event_id      text NOT NULL,
  updated_at    timestamptz NOT NULL DEFAULT now()
);
