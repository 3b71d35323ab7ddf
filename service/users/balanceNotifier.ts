/**
 * Fans balance changes out to open streams. Changes arrive from this process right after commit and from
 * every replica through PostgreSQL NOTIFY; a listener re-reads the balance, so a repeat is harmless.
 */
export class BalanceNotifier {
  private readonly listeners = new Map<string, Set<() => void>>();

  subscribe(userId: string, listener: () => void): () => void {
    let set = this.listeners.get(userId);
    if (!set) this.listeners.set(userId, (set = new Set()));
    set.add(listener);
    return () => {
      set.delete(listener);
      if (set.size === 0) this.listeners.delete(userId);
    };
  }

  notify(userId: string): void {
    for (const listener of this.listeners.get(userId) ?? []) listener();
  }

  /** After a lost database connection: notifications may have been missed, so everyone re-reads. */
  notifyAll(): void {
    for (const userId of [...this.listeners.keys()]) this.notify(userId);
  }

  get openStreams(): number {
    let count = 0;
    for (const set of this.listeners.values()) count += set.size;
    return count;
  }
}
