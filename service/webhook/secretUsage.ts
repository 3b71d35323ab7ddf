import type { SecretStore } from './secretStore';

export interface SecretUsageEntry {
  fingerprint: string;
  /** Whether the secret is in the file this process has loaded now. */
  loaded: boolean;
  /** Deliveries this process verified with the secret since it started. */
  verifiedDeliveries: number;
  /** When this process last verified a delivery with it (ISO 8601), or null. */
  lastVerifiedAt: string | null;
}

/**
 * What each signing secret has verified in this process. A rotation waits on it: the new fingerprint
 * loaded, then no delivery verified with the old one for a quiet period before the old one is retired.
 */
export class SecretUsage {
  private readonly byFingerprint = new Map<string, { count: number; lastMillis: number }>();
  /** Counting starts with the process: a quiet period is only known since then. */
  readonly countingSince: string;

  constructor(
    private readonly secrets: SecretStore,
    nowMillis: number = Date.now(),
  ) {
    this.countingSince = new Date(nowMillis).toISOString();
  }

  recordVerified(fingerprint: string, atMillis: number): void {
    const entry = this.byFingerprint.get(fingerprint);
    if (entry) {
      entry.count += 1;
      entry.lastMillis = Math.max(entry.lastMillis, atMillis);
    } else {
      this.byFingerprint.set(fingerprint, { count: 1, lastMillis: atMillis });
    }
  }

  /** Loaded secrets first, in file order, then secrets retired since start that verified something. */
  snapshot(): SecretUsageEntry[] {
    const loaded = this.secrets.current().map((secret) => secret.fingerprint);
    const retired = [...this.byFingerprint.keys()].filter((fingerprint) => !loaded.includes(fingerprint));
    return [...loaded, ...retired].map((fingerprint) => {
      const entry = this.byFingerprint.get(fingerprint);
      return {
        fingerprint,
        loaded: loaded.includes(fingerprint),
        verifiedDeliveries: entry?.count ?? 0,
        lastVerifiedAt: entry ? new Date(entry.lastMillis).toISOString() : null,
      };
    });
  }
}
