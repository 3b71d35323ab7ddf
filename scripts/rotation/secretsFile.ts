/** The webhook secrets file as the rotation changes it: read with the service's own parser, replaced atomically. */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { parseSecrets, type SigningSecret } from '../../service/webhook/secretStore';
import { replaceFileKeepingOwner } from '../lib/replaceFile';

export async function readSecretsFile(file: string): Promise<SigningSecret[]> {
  let content: string;
  try {
    content = await readFile(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'unknown error';
    throw new Error(`cannot read the secrets file ${file} (${code}): give it with --secrets-file, or set STRIPE_WEBHOOK_SECRET_FILE`, { cause: error });
  }
  return parseSecrets(content, file);
}

/** The secrets, one per line, the newest last (the service credits a delivery to the newest secret that verifies it). */
export function writeSecretsFile(file: string, secrets: readonly string[]): Promise<void> {
  return replaceFileKeepingOwner(file, `${secrets.join('\n')}\n`);
}

/** The secrets file the operator means: --secrets-file, else STRIPE_WEBHOOK_SECRET_FILE, else npm start's development secret. */
export function chooseSecretsFile(given: string | undefined, env: NodeJS.ProcessEnv): { file: string; because: string } {
  if (given) return { file: path.resolve(given), because: '--secrets-file' };
  if (env.STRIPE_WEBHOOK_SECRET_FILE?.trim()) return { file: path.resolve(env.STRIPE_WEBHOOK_SECRET_FILE.trim()), because: 'STRIPE_WEBHOOK_SECRET_FILE' };
  return {
    file: path.resolve(env.DATA_DIR?.trim() || '.data', 'webhook-secret'),
    because: 'the development secret of npm start; give --secrets-file or set STRIPE_WEBHOOK_SECRET_FILE for another',
  };
}
