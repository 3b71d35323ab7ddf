import { randomUUID } from 'node:crypto';
import { describeError, type Database } from '../db';
import type { Logger } from '../logger';
import { BalanceNotifier } from './balanceNotifier';

/** The PostgreSQL channel replicas tell each other on; a payload lists users whose balance changed. */
export const balanceChangesChannel = 'credit_balance_changed';
/** Changes made within this long go out as one notification (the stream sees them at most this much later). */
export const balanceChangesBatchMillis = 50;
/** NOTIFY refuses payloads of 8000 bytes or more: a longer list goes out in several notifications. */
const maxPayloadBytes = 7_000;

interface ChangesPayload {
  /** The process that sent it: it told its own streams already. */
  from: string;
  users: string[];
}

/**
 * Where every writer of credits (webhook, sync, spending, replay) reports a committed balance change. The
 * process's own streams hear it at once; the other replicas hear it through one NOTIFY per batch, sent on a
 * pool connection of its own after the change committed. NOTIFY inside a crediting transaction would take a
 * cluster-wide lock at its commit and serialise every commit (see README, "What bounds the ratio").
 */
export class BalanceChanges {
  readonly processId = randomUUID();
  private pending = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> = Promise.resolve();

  constructor(
    private readonly db: Pick<Database, 'query'>,
    private readonly logger: Logger,
    readonly notifier: BalanceNotifier = new BalanceNotifier(),
  ) {}

  /** A balance change of `userId` committed in this process. */
  changed(userId: string): void {
    this.notifier.notify(userId);
    this.pending.add(userId);
    this.timer ??= setTimeout(() => void this.flush(), balanceChangesBatchMillis);
  }

  /** A notification from the channel: another process's changes reach this process's streams. */
  received(payload: string): void {
    const parsed = parsePayload(payload);
    if (parsed.from === this.processId) return;
    for (const userId of parsed.users) this.notifier.notify(userId);
  }

  /** The listener reconnected: notifications may have been missed meanwhile, so every open stream re-reads. */
  resynchronise(): void {
    this.notifier.notifyAll();
  }

  /** Sends what is pending now; resolves once every batch so far was sent (or failed and was logged). */
  flush(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const users = [...this.pending];
    this.pending = new Set();
    if (users.length > 0) this.flushing = this.flushing.then(() => this.send(users));
    return this.flushing;
  }

  private async send(users: string[]): Promise<void> {
    for (const payload of payloads(this.processId, users)) {
      try {
        await this.db.query('SELECT pg_notify($1, $2)', [balanceChangesChannel, payload]);
      } catch (error) {
        // The change itself committed; only other replicas' streams miss it, until their next change or reconnect.
        this.logger.warn({ err: describeError(error), users: users.length }, 'could not tell other replicas about balance changes');
      }
    }
  }
}

/** Listens on the channel (reconnecting by itself); returns the function that stops listening. */
export function listenForBalanceChanges(db: Database, changes: BalanceChanges): Promise<() => Promise<void>> {
  return db.listen(
    balanceChangesChannel,
    (payload) => changes.received(payload),
    () => changes.resynchronise(),
  );
}

function payloads(from: string, users: string[]): string[] {
  const result: string[] = [];
  let batch: string[] = [];
  let bytes = 0;
  for (const userId of users) {
    const size = Buffer.byteLength(JSON.stringify(userId)) + 1;
    if (batch.length > 0 && bytes + size > maxPayloadBytes) {
      result.push(JSON.stringify({ from, users: batch } satisfies ChangesPayload));
      batch = [];
      bytes = 0;
    }
    batch.push(userId);
    bytes += size;
  }
  if (batch.length > 0) result.push(JSON.stringify({ from, users: batch } satisfies ChangesPayload));
  return result;
}

/** A batch, or (from a replica of an earlier version, during a rolling update) one bare user id. */
function parsePayload(payload: string): ChangesPayload {
  if (payload.startsWith('{')) {
    try {
      const parsed = JSON.parse(payload) as Partial<ChangesPayload>;
      if (typeof parsed.from === 'string' && Array.isArray(parsed.users)) return { from: parsed.from, users: parsed.users.filter((user) => typeof user === 'string') };
    } catch {
      // Not ours: taken as a user id below.
    }
  }
  return { from: '', users: [payload] };
}
