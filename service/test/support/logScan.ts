/** What must never appear in a log line: signing secrets, signature headers, session keys and tokens. */
export interface LogLeak {
  line: number;
  what: string;
}

const signaturePatterns: Array<[string, RegExp]> = [
  ['a v1 signature', /v1=[0-9a-f]{64}/],
  ['a Stripe-Signature timestamp', /t=\d{9,12},v\d=/],
  ['a webhook secret', /whsec_/],
  ['a JWT', /eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\./],
];

/** Returns every leak found (empty when the logs are clean); `secrets` are matched literally. */
export function findLogLeaks(lines: readonly string[], secrets: readonly string[]): LogLeak[] {
  const leaks: LogLeak[] = [];
  lines.forEach((text, index) => {
    for (const secret of secrets) if (secret && text.includes(secret)) leaks.push({ line: index, what: `a configured secret (${secret.slice(0, 6)}…)` });
    for (const [what, pattern] of signaturePatterns) if (pattern.test(text)) leaks.push({ line: index, what });
  });
  return leaks;
}
