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
