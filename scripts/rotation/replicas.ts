/** What the running replicas say about the signing secrets (GET /webhook-secrets on each service port). */

export interface FingerprintUsage {
  fingerprint: string;
  loaded: boolean;
  verified_deliveries: number;
  last_verified_at: string | null;
}

export interface ReplicaReport {
  url: string;
  /** Undefined when the replica did not answer (the reason is in `problem`). */
  countingSince?: string;
  fingerprints: FingerprintUsage[];
  problem?: string;
}

const requestTimeoutMillis = 5_000;

export async function askReplica(url: string): Promise<ReplicaReport> {
  const address = `${url.replace(/\/+$/, '')}/webhook-secrets`;
  try {
    const response = await fetch(address, { signal: AbortSignal.timeout(requestTimeoutMillis) });
    if (!response.ok) return { url, fingerprints: [], problem: `${address} answered ${response.status} (a service older than /webhook-secrets, or not the service port)` };
    const body = (await response.json()) as { counting_since?: string; fingerprints?: FingerprintUsage[] };
    return { url, countingSince: body.counting_since, fingerprints: body.fingerprints ?? [] };
  } catch (error) {
    return { url, fingerprints: [], problem: `${address} did not answer (${(error as Error).message})` };
  }
}

export function askReplicas(urls: readonly string[]): Promise<ReplicaReport[]> {
  return Promise.all(urls.map(askReplica));
}

export function hasLoaded(report: ReplicaReport, fingerprint: string): boolean {
  return report.fingerprints.some((entry) => entry.fingerprint === fingerprint && entry.loaded);
}

export function verifiedWith(report: ReplicaReport, fingerprint: string): FingerprintUsage | undefined {
  return report.fingerprints.find((entry) => entry.fingerprint === fingerprint);
}

export interface QuietCheck {
  quiet: boolean;
  /** When every replica will have been quiet long enough, if nothing more arrives with the old secrets. */
  quietAtMillis: number;
  /** Why not yet, one line per replica and secret. */
  reasons: string[];
}

/**
 * Whether no replica verified a delivery with any of `oldFingerprints` during the last `quietForMillis`, counted
 * from `sinceMillis` at the earliest (the new secret loaded everywhere, or the old endpoint deleted) and never
 * from before a replica started counting (a restarted replica has seen only part of the period).
 */
export function checkQuiet(reports: readonly ReplicaReport[], oldFingerprints: readonly string[], options: { sinceMillis: number; quietForMillis: number; nowMillis: number }): QuietCheck {
  const reasons: string[] = [];
  let quietAtMillis = 0;
  for (const report of reports) {
    if (report.problem) {
      reasons.push(report.problem);
      quietAtMillis = Number.POSITIVE_INFINITY;
      continue;
    }
    const counting = Date.parse(report.countingSince ?? '') || options.nowMillis;
    for (const fingerprint of oldFingerprints) {
      const last = Date.parse(verifiedWith(report, fingerprint)?.last_verified_at ?? '') || 0;
      const from = Math.max(options.sinceMillis, counting, last);
      const replicaQuietAt = from + options.quietForMillis;
      quietAtMillis = Math.max(quietAtMillis, replicaQuietAt);
      if (replicaQuietAt > options.nowMillis) {
        const why = last >= Math.max(options.sinceMillis, counting) ? `verified a delivery with ${fingerprint} at ${new Date(last).toISOString()}` : `has watched ${fingerprint} only since ${new Date(from).toISOString()}`;
        reasons.push(`${report.url} ${why}`);
      }
    }
  }
  return { quiet: reasons.length === 0, quietAtMillis, reasons };
}
