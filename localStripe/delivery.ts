/**
 * Webhook delivery as Stripe does it: each event is POSTed to each subscribed endpoint on its own, signed
 * with that endpoint's secret at the time of the attempt; anything but a 2xx within the timeout is a
 * failure, retried later (test mode: three more times over a few hours). Deliveries of events created
 * together start together, each after a small random delay: they arrive in no guaranteed order.
 */
import http from 'node:http';
import https from 'node:https';
import type { LocalStripeEvent } from './resources';
import { signedDelivery, type WebhookDelivery } from './signing';

export interface DeliverySchedule {
  /** Delays before each retry of a failed delivery; Stripe's test mode retries three times over a few hours. */
  retryDelaysMillis: readonly number[];
  /** Each first attempt starts after a random delay up to this long, so events of one moment arrive in any order. */
  jitterMillis: number;
  timeoutMillis: number;
}

export const DEFAULT_DELIVERY_SCHEDULE: DeliverySchedule = {
  retryDelaysMillis: [5 * 60_000, 60 * 60_000, 3 * 60 * 60_000],
  jitterMillis: 30,
  timeoutMillis: 30_000,
};

const settlePollMillis = 5;

export interface DeliveryAttempt {
  eventId: string;
  eventType: string;
  endpointId: string;
  url: string;
  /** 1 for the first delivery, 2 for the first retry… */
  attempt: number;
  /** The HTTP status, or 0 when no answer came (refused, reset, timed out). */
  status: number;
  atMillis: number;
}

export interface DeliveryResult {
  status: number;
  body: string;
  headers: http.IncomingHttpHeaders;
}

export class WebhookDeliveries {
  readonly attempts: DeliveryAttempt[] = [];
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly inFlight = new Set<Promise<void>>();
  /** First attempts waiting for their random start. */
  private firstAttemptsDue = 0;
  private closed = false;

  constructor(
    private readonly schedule: DeliverySchedule,
    private readonly onDelivered: (eventId: string, endpointId: string) => void,
    /** The endpoint's URL and signing secrets at the time of an attempt; undefined once it was deleted. */
    private readonly deliveryTarget: (endpointId: string) => { url: string; secrets: string[] } | undefined,
  ) {}

  /** Delivers the (stored) event to each of these endpoints, retrying failures on the schedule. */
  enqueue(event: LocalStripeEvent, endpoints: ReadonlyArray<{ id: string }>): void {
    const body = JSON.stringify(event, null, 2);
    for (const endpoint of endpoints) {
      this.firstAttemptsDue++;
      this.later(Math.random() * this.schedule.jitterMillis, () => {
        this.firstAttemptsDue--;
        return this.attempt(event, body, endpoint, 1);
      });
    }
  }

  /** Resolves once no delivery is in flight or about to start (retries due later are not waited for). */
  async settled(): Promise<void> {
    while (!this.closed && (this.inFlight.size > 0 || this.firstAttemptsDue > 0)) {
      await Promise.all([...this.inFlight]);
      await new Promise((resolve) => setTimeout(resolve, settlePollMillis));
    }
  }

  /** Forgets the attempts made and drops the deliveries still to come. */
  reset(): void {
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    this.firstAttemptsDue = 0;
    this.attempts.length = 0;
  }

  close(): void {
    this.closed = true;
    this.reset();
  }

  private later(delayMillis: number, run: () => Promise<void>): void {
    if (this.closed) return;
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      const running = run().finally(() => this.inFlight.delete(running));
      this.inFlight.add(running);
    }, delayMillis);
    // Pending retries never keep a process alive (npm start stops when asked, tests end).
    timer.unref();
    this.timers.add(timer);
  }

  private async attempt(event: LocalStripeEvent, body: string, endpoint: { id: string }, attempt: number): Promise<void> {
    if (this.closed) return;
    // A deleted endpoint gets nothing more, retries included.
    const target = this.deliveryTarget(endpoint.id);
    if (!target) return;
    // Signed at the time of each attempt with the endpoint's secrets then (two while one is rolled), as
    // Stripe does (a retry hours later carries a fresh timestamp).
    const status = await postDelivery(target.url, signedDelivery(body, target.secrets), this.schedule.timeoutMillis).then(
      (answer) => answer.status,
      () => 0,
    );
    this.attempts.push({ eventId: event.id, eventType: event.type, endpointId: endpoint.id, url: target.url, attempt, status, atMillis: Date.now() });
    if (status >= 200 && status < 300) {
      this.onDelivered(event.id, endpoint.id);
      return;
    }
    const retryDelay = this.schedule.retryDelaysMillis[attempt - 1];
    if (retryDelay !== undefined) this.later(retryDelay, () => this.attempt(event, body, endpoint, attempt + 1));
  }
}

/** One webhook POST on a fresh connection (no keep-alive to hold the receiver's server open). */
export function postDelivery(url: string, delivery: WebhookDelivery, timeoutMillis: number): Promise<DeliveryResult> {
  const target = new URL(url);
  const transport = target.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const request = transport.request(
      target,
      {
        method: 'POST',
        agent: false,
        timeout: timeoutMillis,
        headers: { ...delivery.headers, 'content-length': Buffer.byteLength(delivery.body) },
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () => resolve({ status: response.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8'), headers: response.headers }));
        response.on('error', reject);
      },
    );
    request.on('timeout', () => request.destroy(new Error(`Webhook delivery to ${url} timed out after ${timeoutMillis} ms`)));
    request.on('error', reject);
    request.end(delivery.body);
  });
}
