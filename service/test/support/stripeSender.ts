/**
 * Delivers events the way Stripe does: POST each signed event, and retry whatever did not get a 2xx
 * (error status, refused or dropped connection) after a short delay, until every one is acknowledged or
 * the deadline passes. Counts every attempt and status for the scenario's figures.
 */
import { signedDelivery } from './stripeFixtures';

export interface SenderOptions {
  /** The URL to post to at the time of each attempt: it may change (restarted replica, other replica). */
  target: (attempt: number, index: number) => string;
  secrets: readonly string[];
  concurrency: number;
  /** Every event must be acknowledged by then, or sendAll rejects naming how many were not. */
  deadlineMillis: number;
  retryDelayMillis?: number;
  /** Called after each attempt (e.g. to inject a fault after the n-th answer). */
  onAnswer?: (answer: AttemptRecord) => void;
}

export interface AttemptRecord {
  eventId: string;
  attempt: number;
  /** HTTP status, or 0 when the connection failed. */
  status: number;
  body: string;
}

export interface SendReport {
  acknowledged: string[];
  attempts: number;
  statusCounts: Record<string, number>;
  records: AttemptRecord[];
}

const defaultRetryDelayMillis = 50;
const attemptTimeoutMillis = 20_000;

export async function postSigned(url: string, event: object, secrets: readonly string[]): Promise<{ status: number; body: string }> {
  const delivery = signedDelivery(event, secrets);
  try {
    const response = await fetch(url, {
      method: 'POST',
      headers: delivery.headers,
      body: delivery.body,
      signal: AbortSignal.timeout(attemptTimeoutMillis),
    });
    return { status: response.status, body: await response.text() };
  } catch {
    return { status: 0, body: '' };
  }
}

/** Sends every event until acknowledged (2xx), `concurrency` at a time; rejects at the deadline. */
export async function sendAll(events: ReadonlyArray<{ id: string }>, options: SenderOptions): Promise<SendReport> {
  const deadline = Date.now() + options.deadlineMillis;
  const acknowledged: string[] = [];
  const records: AttemptRecord[] = [];
  const statusCounts: Record<string, number> = {};
  let next = 0;
  const worker = async () => {
    while (next < events.length) {
      const index = next++;
      const event = events[index]!;
      for (let attempt = 1; ; attempt++) {
        if (Date.now() > deadline) return;
        const answer = await postSigned(options.target(attempt, index), event, options.secrets);
        const record = { eventId: event.id, attempt, status: answer.status, body: answer.body };
        records.push(record);
        statusCounts[String(answer.status)] = (statusCounts[String(answer.status)] ?? 0) + 1;
        options.onAnswer?.(record);
        if (answer.status >= 200 && answer.status < 300) {
          acknowledged.push(event.id);
          break;
        }
        await new Promise((resolve) => setTimeout(resolve, options.retryDelayMillis ?? defaultRetryDelayMillis));
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(options.concurrency, events.length) }, worker));
  if (acknowledged.length < events.length) {
    throw new Error(
      `${events.length - acknowledged.length} of ${events.length} events were not acknowledged within ${options.deadlineMillis} ms ` +
        `(statuses seen: ${JSON.stringify(statusCounts)})`,
    );
  }
  return { acknowledged, attempts: records.length, statusCounts, records };
}
