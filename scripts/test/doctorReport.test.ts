/** The doctor's report never carries a secret, whatever a check or Stripe put into its text; placeholders stay readable. */
import { exitCodeFor, failed, formatChecklist, ok, redactSecrets, skipped } from '../doctor/report';

test('keys, signing secrets and database passwords are redacted; placeholders such as sk_test_… stay', () => {
  const text = 'key sk_live_51Habc123 secret whsec_Zx9yq8 rk_test_abcdef url postgres://app:s3cr%40t@db:5432/credits; put sk_test_… or whsec_… in the file';

  expect(redactSecrets(text)).toBe('key [redacted] secret [redacted] [redacted] url postgres://app:[redacted]@db:5432/credits; put sk_test_… or whsec_… in the file');
});

test('the checklist marks each check, prints a fix under each failure, and redacts; the exit code is 1 only when a check failed', () => {
  const results = [
    ok('edge', 'webhook-url', 'the URL answers 400', { detail: 'answered 400' }),
    failed('stripe', 'endpoint-enabled', 'the endpoint is enabled', { detail: 'status disabled', fix: 'enable it; the key was sk_live_leaked1' }),
    skipped('database', 'database-reachable', 'the database is reachable', 'no database'),
  ];

  const text = formatChecklist('doctor', results);

  expect(text).toContain('  ✓ the URL answers 400: answered 400');
  expect(text).toContain('  ✗ the endpoint is enabled: status disabled\n    fix: enable it; the key was [redacted]');
  expect(text).toContain('  – the database is reachable (skipped: no database)');
  expect(text).toContain('1 of 2 checks failed');
  expect(exitCodeFor(results)).toBe(1);
  expect(exitCodeFor([results[0]!, results[2]!])).toBe(0);
});
