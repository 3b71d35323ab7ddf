import type { Queryable } from '../db';

/** The last event a replay applied with nothing before it left to retry (see 005_replay_cursor.sql). */
export interface ReplayCursor {
  /** Unix seconds: the event's `created`. */
  createdSeconds: number;
  eventId: string;
  /** When the cursor was last moved. */
  updatedAt: Date;
}

export async function readReplayCursor(db: Queryable, livemode: boolean): Promise<ReplayCursor | undefined> {
  const { rows } = await db.query<{ created_seconds: number; event_id: string; updated_at: Date }>(
    'SELECT extract(epoch FROM event_created)::bigint AS created_seconds, event_id, updated_at FROM replay_cursor WHERE livemode = $1',
    [livemode],
  );
  const row = rows[0];
  return row ? { createdSeconds: Number(row.created_seconds), eventId: row.event_id, updatedAt: row.updated_at } : undefined;
}

/** Moves the cursor to the event, never backwards: two replays at once (script and service) both only advance it. */
export async function advanceReplayCursor(db: Queryable, livemode: boolean, event: { id: string; created: number }): Promise<void> {
  await db.query(
    `INSERT INTO replay_cursor (livemode, event_created, event_id) VALUES ($1, to_timestamp($2), $3)
     ON CONFLICT (livemode) DO UPDATE SET event_created = EXCLUDED.event_created, event_id = EXCLUDED.event_id, updated_at = now()
       WHERE replay_cursor.event_created <= EXCLUDED.event_created`,
    [livemode, event.created, event.id],
  );
}
