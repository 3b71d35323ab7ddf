/**
 * A minimal EventSource over fetch for tests: collects Server-Sent Events as they arrive; `next` waits for
 * one, with a deadline (no fixed sleeps).
 */

/** Upper bound on how long a balance change may take to reach a stream; the wait ends as soon as it does. */
const defaultDeadlineMillis = 5_000;

export interface ServerSentEvent {
  event: string;
  data: string;
}

/** A minimal EventSource over fetch: collects events as they arrive; `next` waits for one, with a deadline. */
export class StreamClient {
  private readonly received: ServerSentEvent[] = [];
  private cursor = 0;
  private wake: (() => void) | undefined;
  private ended = false;

  private constructor(
    readonly response: Response,
    private readonly controller: AbortController,
  ) {
    void this.pump();
  }

  static async open(url: string, headers: Record<string, string> = {}): Promise<StreamClient> {
    const controller = new AbortController();
    const response = await fetch(url, { headers, signal: controller.signal });
    return new StreamClient(response, controller);
  }

  private async pump(): Promise<void> {
    const decoder = new TextDecoder();
    let buffer = '';
    try {
      for await (const chunk of this.response.body as unknown as AsyncIterable<Uint8Array>) {
        buffer += decoder.decode(chunk, { stream: true });
        let boundary: number;
        while ((boundary = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, boundary);
          buffer = buffer.slice(boundary + 2);
          const lines = block.split('\n');
          const field = (name: string) =>
            lines
              .filter((line) => line.startsWith(`${name}: `))
              .map((line) => line.slice(name.length + 2))
              .join('\n');
          if (lines.some((line) => line.startsWith('data: '))) this.received.push({ event: field('event') || 'message', data: field('data') });
          this.wake?.();
        }
      }
    } catch {
      // Aborted by close(), or the server went away: the waiters below see `ended`.
    } finally {
      this.ended = true;
      this.wake?.();
    }
  }

  /** The next event not returned before; fails after the deadline or when the stream ends. */
  async next(deadlineMillis = defaultDeadlineMillis): Promise<ServerSentEvent> {
    const deadline = Date.now() + deadlineMillis;
    while (this.cursor >= this.received.length) {
      if (this.ended) throw new Error(`stream ended; events so far: ${JSON.stringify(this.received)}`);
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw new Error(`no event within ${deadlineMillis} ms; events so far: ${JSON.stringify(this.received)}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, remaining);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = undefined;
    }
    return this.received[this.cursor++]!;
  }

  /** The next `balance` event's credits view. */
  async nextBalance(deadlineMillis = defaultDeadlineMillis): Promise<Record<string, unknown>> {
    const message = await this.next(deadlineMillis);
    if (message.event !== 'balance') throw new Error(`expected a balance event, got ${JSON.stringify(message)}`);
    return JSON.parse(message.data) as Record<string, unknown>;
  }

  /** Balance events until one satisfies `check` (a change may come in several steps). */
  async balanceWhere(check: (view: Record<string, unknown>) => boolean, deadlineMillis = defaultDeadlineMillis): Promise<Record<string, unknown>> {
    const deadline = Date.now() + deadlineMillis;
    for (;;) {
      const view = await this.nextBalance(Math.max(1, deadline - Date.now()));
      if (check(view)) return view;
    }
  }

  /** Events that arrived and were not read yet. */
  get unread(): ServerSentEvent[] {
    return this.received.slice(this.cursor);
  }

  close(): void {
    this.controller.abort();
  }
}
