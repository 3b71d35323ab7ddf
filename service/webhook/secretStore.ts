import { watch, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../logger';
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

export class SecretFileError extends Error {
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

const defaultPollIntervalMillis = 2_000;
const reloadDebounceMillis = 25;

/**
 * Loads the secrets file and keeps it current without a restart. The directory is watched, not the file,
 * because an atomic rename or a Kubernetes/Docker `..data` symlink swap replaces the file's inode.
 */
export async function watchSecretFile(filePath: string, options: SecretFileOptions): Promise<SecretStore> {
  const { logger } = options;
  const source = `STRIPE_WEBHOOK_SECRET_FILE (${filePath})`;
  let lastContent = await readSecretFile(filePath, source);
  let secrets = parseSecrets(lastContent, source);
  let debounceTimer: NodeJS.Timeout | undefined;
  let reloading: Promise<void> | undefined;

  const reload = async () => {
    let content: string;
    try {
      content = await readSecretFile(filePath, source);
    } catch (error) {
      logger.error({ reason: (error as Error).message }, 'webhook secret file unreadable; keeping the previous secrets');
      return;
    }
    if (content === lastContent) return;
    lastContent = content;
    try {
      const next = parseSecrets(content, source);
      const changed = next.map((s) => s.fingerprint).join() !== secrets.map((s) => s.fingerprint).join();
      secrets = next;
      if (changed) {
        logger.info({ fingerprints: next.map((s) => s.fingerprint) }, 'webhook signing secrets reloaded');
        options.onReload?.(next);
      }
    } catch (error) {
      logger.error({ reason: (error as Error).message }, 'webhook secret file invalid; keeping the previous secrets');
    }
  };

  const scheduleReload = () => {
    if (debounceTimer) return;
    debounceTimer = setTimeout(() => {
      debounceTimer = undefined;
      reloading = (reloading ?? Promise.resolve()).then(reload);
    }, reloadDebounceMillis);
  };

  let watcher: FSWatcher | undefined;
  try {
    watcher = watch(path.dirname(filePath), { persistent: false }, scheduleReload);
    watcher.on('error', (error) => logger.warn({ reason: error.message }, 'cannot watch the webhook secret directory; relying on the timer'));
  } catch (error) {
    logger.warn({ reason: (error as Error).message }, 'cannot watch the webhook secret directory; relying on the timer');
  }
  const poller = setInterval(scheduleReload, options.pollIntervalMillis ?? defaultPollIntervalMillis);
  poller.unref();

  return {
    current: () => secrets,
    close() {
      watcher?.close();
      clearInterval(poller);
      if (debounceTimer) clearTimeout(debounceTimer);
    },
  };
}

async function readSecretFile(filePath: string, source: string): Promise<string> {
  try {
    return await readFile(filePath, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'unknown error';
    throw new SecretFileError(`${source} cannot be read (${code}). Create the file or fix the path.`);
  }
}
