import type { Logger } from '../logger';
import { watchFile, WatchedFileError } from '../watchedFile';
import { fingerprintSecret } from './secretFingerprint';

export interface SigningSecret {
  value: string;
  fingerprint: string;
}

/** The signing secrets in force right now: one normally, two or more while a rotation is under way. */
export interface SecretStore {
  current(): readonly SigningSecret[];
  close(): void;
}

export class SecretFileError extends WatchedFileError {
  override name = 'SecretFileError';
}

/**
 * Parses a secrets file: one `whsec_` secret per line; blank lines, surrounding whitespace and CRs are
 * ignored. Errors name the line, never its content.
 */
export function parseSecrets(content: string, source: string): SigningSecret[] {
  const secrets: SigningSecret[] = [];
  content.split('\n').forEach((line, index) => {
    const value = line.trim();
    if (!value) return;
    if (!/^whsec_\S+$/.test(value)) {
      throw new SecretFileError(
        `${source} line ${index + 1} is not a Stripe webhook signing secret (each line must start with "whsec_"). ` +
          'Copy the secret from the Stripe endpoint, one per line.',
      );
    }
    if (!secrets.some((known) => known.value === value)) secrets.push({ value, fingerprint: fingerprintSecret(value) });
  });
  if (secrets.length === 0) throw new SecretFileError(`${source} holds no webhook signing secret. Write one "whsec_…" line into it.`);
  return secrets;
}

export function fixedSecrets(values: readonly string[]): SecretStore {
  const secrets = parseSecrets(values.join('\n'), 'STRIPE_WEBHOOK_SECRET');
  return { current: () => secrets, close: () => undefined };
}

export interface SecretFileOptions {
  logger: Logger;
  /** Re-read on this timer too: directory events can be missed (network filesystems, some bind mounts). */
  pollIntervalMillis?: number;
  onReload?: (secrets: readonly SigningSecret[]) => void;
}

/** Loads the secrets file and keeps it current without a restart (see watchFile). */
export function watchSecretFile(filePath: string, options: SecretFileOptions): Promise<SecretStore> {
  return watchFile(filePath, {
    ...options,
    source: `STRIPE_WEBHOOK_SECRET_FILE (${filePath})`,
    what: 'webhook signing secrets',
    parse: parseSecrets,
    describe: (secrets) => ({ fingerprints: secrets.map((secret) => secret.fingerprint) }),
  });
}
