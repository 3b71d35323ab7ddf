/** What a doctor check found, and how the findings are shown: a checklist for people, JSON for machines. */

export type CheckStatus = 'ok' | 'failed' | 'skipped';
export type Section = 'edge' | 'stripe' | 'secrets' | 'database' | 'user';

export interface CheckResult {
  /** Stable name, for --json readers and tests (e.g. `endpoint-enabled`). */
  id: string;
  section: Section;
  /** What must hold, phrased as the healthy state. */
  title: string;
  status: CheckStatus;
  /** What was found (or, when skipped, why). */
  detail: string;
  /** What to do about a failure: a command or a concrete step. */
  fix?: string;
  /** One line per thing found (events, ledger entries…). */
  items?: string[];
  /** Machine-readable findings for --json. */
  data?: unknown;
}

type Fields = Omit<CheckResult, 'status' | 'id' | 'section' | 'title'>;

export function ok(section: Section, id: string, title: string, fields: Fields): CheckResult {
  return { id, section, title, status: 'ok', ...fields };
}

export function failed(section: Section, id: string, title: string, fields: Fields & { fix: string }): CheckResult {
  return { id, section, title, status: 'failed', ...fields };
}

export function skipped(section: Section, id: string, title: string, why: string): CheckResult {
  return { id, section, title, status: 'skipped', detail: why };
}

const sectionNames: Record<Section, string> = {
  edge: 'Edge (public webhook URL, TLS, nginx)',
  stripe: 'Stripe (endpoint and deliveries)',
  secrets: 'Signing secret',
  database: 'Database',
  user: 'User',
};
const marks: Record<CheckStatus, string> = { ok: '✓', failed: '✗', skipped: '–' };

/**
 * Stripe's error messages and command output may quote a key or a secret: nothing key-like leaves the
 * doctor, whatever a check put into its text.
 */
export function redactSecrets(text: string): string {
  // A placeholder such as sk_test_… or whsec_… in a fix stays readable: only something after the prefix is a key.
  return text.replace(/\b(?:(?:sk|rk|pk)_(?:test|live)_|whsec_)[A-Za-z0-9_*]{3,}/g, '[redacted]').replace(/(postgres(?:ql)?:\/\/[^:/@\s]+:)[^@\s]+@/g, '$1[redacted]@');
}

export function formatChecklist(heading: string, results: readonly CheckResult[]): string {
  const lines = [heading];
  for (const section of Object.keys(sectionNames) as Section[]) {
    const inSection = results.filter((result) => result.section === section);
    if (inSection.length === 0) continue;
    lines.push('', sectionNames[section]);
    for (const result of inSection) {
      const note = result.status === 'skipped' ? ` (skipped: ${result.detail})` : `: ${result.detail}`;
      lines.push(`  ${marks[result.status]} ${result.title}${note}`);
      for (const item of result.items ?? []) lines.push(`      ${item}`);
      if (result.status === 'failed' && result.fix) lines.push(`    fix: ${result.fix}`);
    }
  }
  const problems = results.filter((result) => result.status === 'failed').length;
  const checked = results.filter((result) => result.status !== 'skipped').length;
  lines.push('', problems === 0 ? `All ${checked} checks passed.` : `${problems} of ${checked} checks failed: each says what to do (fix: …).`);
  return redactSecrets(lines.join('\n')) + '\n';
}

export function formatJson(heading: Record<string, unknown>, results: readonly CheckResult[]): string {
  const healthy = results.every((result) => result.status !== 'failed');
  return redactSecrets(JSON.stringify({ ...heading, healthy, checks: results }, null, 2)) + '\n';
}

export const doctorExitCodes = { healthy: 0, problems: 1, usage: 2, unexpected: 70, configuration: 78 } as const;

export function exitCodeFor(results: readonly CheckResult[]): number {
  return results.some((result) => result.status === 'failed') ? doctorExitCodes.problems : doctorExitCodes.healthy;
}
