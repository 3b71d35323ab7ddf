/**
 * Waiting out Stripe's rate limit (429). Stripe documents no Retry-After for it (it sends
 * Stripe-Rate-Limited-Reason) and asks for exponential backoff with jitter; a Retry-After, when an answer
 * carries one, is honoured all the same. stripe-node does not retry a 429 by itself.
 */

export interface BackoffOptions {
  /** Attempts in all, the first included, before giving up. */
  maxAttempts: number;
  /** The first wait; each later one doubles, up to `maxDelayMillis`. */
  baseDelayMillis: number;
  maxDelayMillis: number;
  sleep: (millis: number) => Promise<void>;
  /** In [0, 1): the jitter. */
  random: () => number;
  /** Told before each wait: how long, after which attempt, and Stripe's reason when it gave one. */
  onWait?: (wait: { delayMillis: number; attempt: number; reason: string | undefined }) => void;
}

export const defaultBackoff: BackoffOptions = {
  maxAttempts: 8,
  baseDelayMillis: 1_000,
  maxDelayMillis: 32_000,
  sleep: (millis) => new Promise((resolve) => setTimeout(resolve, millis)),
  random: Math.random,
};

/** Stripe answered 429 to every attempt: the caller says Stripe is unavailable (exit 69), not that events failed. */
export class RateLimitExhaustedError extends Error {
  override name = 'RateLimitExhaustedError';
}

interface RateLimitedAnswer {
  statusCode?: number;
  headers?: Record<string, string | string[] | undefined>;
}

function isRateLimited(error: unknown): error is RateLimitedAnswer {
  return (error as RateLimitedAnswer | undefined)?.statusCode === 429;
}

function header(error: RateLimitedAnswer, name: string): string | undefined {
  const value = error.headers?.[name];
  return Array.isArray(value) ? value[0] : value;
}

/** The wait before attempt `attempt + 1`: Retry-After when given (bounded), else 2^(attempt-1) × base, jittered down to half. */
export function backoffDelayMillis(attempt: number, retryAfter: string | undefined, options: Pick<BackoffOptions, 'baseDelayMillis' | 'maxDelayMillis' | 'random'>): number {
  const retryAfterSeconds = retryAfter === undefined ? NaN : Number(retryAfter);
  if (Number.isFinite(retryAfterSeconds) && retryAfterSeconds >= 0) return Math.min(retryAfterSeconds * 1000, options.maxDelayMillis);
  const exponential = Math.min(options.baseDelayMillis * 2 ** (attempt - 1), options.maxDelayMillis);
  return Math.round(exponential * (0.5 + options.random() / 2));
}

/** Calls `request` until it is not rate-limited, waiting in between; other errors pass through at once. */
export async function withRateLimitBackoff<T>(request: () => Promise<T>, options: BackoffOptions = defaultBackoff): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await request();
    } catch (error) {
      if (!isRateLimited(error)) throw error;
      if (attempt >= options.maxAttempts) {
        throw new RateLimitExhaustedError(`Stripe's rate limit answered ${attempt} attempts in a row (429); try again later, or when nothing else uses this API key heavily.`, { cause: error });
      }
      const delayMillis = backoffDelayMillis(attempt, header(error, 'retry-after'), options);
      options.onWait?.({ delayMillis, attempt, reason: header(error, 'stripe-rate-limited-reason') });
      await options.sleep(delayMillis);
    }
  }
}
