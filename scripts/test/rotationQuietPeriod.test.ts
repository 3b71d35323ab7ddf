/** When `rotate-webhook-secret` may retire an old secret: the replicas' reports against the quiet period. */
import { checkQuiet, type ReplicaReport } from '../rotation/replicas';

const minute = 60_000;
const loadedAt = Date.parse('2026-12-02T10:00:00Z');
const old = 'aaaaaaaaaaaa';
const fresh = 'bbbbbbbbbbbb';

function replica(url: string, options: { countingSince?: number; oldLastVerified?: number } = {}): ReplicaReport {
  return {
    url,
    countingSince: new Date(options.countingSince ?? loadedAt - 60 * minute).toISOString(),
    fingerprints: [
      { fingerprint: old, loaded: true, verified_deliveries: options.oldLastVerified ? 3 : 0, last_verified_at: options.oldLastVerified ? new Date(options.oldLastVerified).toISOString() : null },
      { fingerprint: fresh, loaded: true, verified_deliveries: 10, last_verified_at: new Date(loadedAt).toISOString() },
    ],
  };
}

const at = (nowMillis: number, reports: ReplicaReport[]) => checkQuiet(reports, [old], { sinceMillis: loadedAt, quietForMillis: 10 * minute, nowMillis });

test('quiet once every replica has gone the whole period, counted from the new secret being loaded, without the old one', () => {
  const reports = [replica('http://a'), replica('http://b', { oldLastVerified: loadedAt - 5 * minute })];
  expect(at(loadedAt + 9 * minute, reports)).toMatchObject({ quiet: false, quietAtMillis: loadedAt + 10 * minute });
  expect(at(loadedAt + 10 * minute, reports)).toEqual({ quiet: true, quietAtMillis: loadedAt + 10 * minute, reasons: [] });
});

test('a delivery verified with the old secret on any replica restarts the period, and the reason names the replica', () => {
  const check = at(loadedAt + 12 * minute, [replica('http://a'), replica('http://b', { oldLastVerified: loadedAt + 5 * minute })]);
  expect(check).toMatchObject({ quiet: false, quietAtMillis: loadedAt + 15 * minute });
  expect(check.reasons).toEqual([`http://b verified a delivery with ${old} at ${new Date(loadedAt + 5 * minute).toISOString()}`]);
});

test('a replica restarted since has watched only part of the period: it counts from its start', () => {
  const check = at(loadedAt + 12 * minute, [replica('http://a', { countingSince: loadedAt + 8 * minute })]);
  expect(check).toMatchObject({ quiet: false, quietAtMillis: loadedAt + 18 * minute });
  expect(check.reasons[0]).toContain('has watched');
});

test('a replica that does not answer is never quiet', () => {
  const check = at(loadedAt + 60 * minute, [replica('http://a'), { url: 'http://b', fingerprints: [], problem: 'http://b/webhook-secrets did not answer' }]);
  expect(check.quiet).toBe(false);
  expect(check.reasons).toEqual(['http://b/webhook-secrets did not answer']);
});
