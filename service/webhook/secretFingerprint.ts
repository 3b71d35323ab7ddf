import { createHash } from 'node:crypto';

/** A short, stable name for a signing secret that reveals nothing about it (for metrics, logs, exports). */
export function fingerprintSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('hex').slice(0, 12);
}
