/** What applying one event did; `unmatched` events are recorded and logged but change no credits. */
export type HandlerOutcome =
  | { status: 'processed'; userId?: string; note?: string }
  | { status: 'ignored'; reason: string }
  | { status: 'unmatched'; reason: string; userId?: string };

export const unmatched = (reason: string, userId?: string): HandlerOutcome => ({ status: 'unmatched', reason, userId });

const maxUserIdLength = 200;

/** A user id as our product issues it: Checkout's client_reference_id or metadata.user_id. Never guessed. */
export function readUserId(...candidates: unknown[]): string | undefined {
  for (const candidate of candidates) {
    if (typeof candidate !== 'string') continue;
    const userId = candidate.trim();
    if (userId && userId.length <= maxUserIdLength) return userId;
  }
  return undefined;
}

/** What the crediting functions of migration 004 return. */
export interface SqlOutcome {
  result_status: 'processed' | 'unmatched' | 'duplicate';
  result_user_id: string | null;
  result_note: string | null;
}

export function fromSqlOutcome(row: SqlOutcome): HandlerOutcome {
  const userId = row.result_user_id ?? undefined;
  if (row.result_status === 'unmatched') return unmatched(row.result_note ?? 'unmatched', userId);
  if (row.result_status === 'duplicate') throw new Error('a rule cannot answer "duplicate": only the claim of an event can');
  return { status: 'processed', ...(userId ? { userId } : {}), ...(row.result_note ? { note: row.result_note } : {}) };
}
