/**
 * The rotation in progress, recorded beside the secrets file (`<file>.rotation.json`, mode 0600): whoever can
 * change the secrets file can change this one, every replica reading the file shares it, and the script needs
 * no database credentials. Fingerprints and endpoint ids only, never a secret.
 */
import { readFile, rename, writeFile } from 'node:fs/promises';

export interface RotationState {
  kind: 'dashboard-roll' | 'endpoint-replacement';
  started_at: string;
  /** When Stripe stops signing with the old secret (Dashboard roll), and --finish may retire it regardless. */
  expires_at: string;
  old_fingerprints: string[];
  new_fingerprint: string;
  service_urls: string[];
  /** When every replica reported the new secret loaded. */
  all_loaded_at: string | null;
  old_endpoint_id?: string;
  new_endpoint_id?: string;
  old_endpoint_deleted_at?: string;
  finished_at: string | null;
}

export const stateFileOf = (secretsFile: string) => `${secretsFile}.rotation.json`;

export async function readRotationState(secretsFile: string): Promise<RotationState | undefined> {
  try {
    return JSON.parse(await readFile(stateFileOf(secretsFile), 'utf8')) as RotationState;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new Error(`cannot read ${stateFileOf(secretsFile)} (${(error as Error).message}): fix or remove it`, { cause: error });
  }
}

export async function writeRotationState(secretsFile: string, state: RotationState): Promise<void> {
  const file = stateFileOf(secretsFile);
  const temporary = `${file}.${process.pid}.tmp`;
  await writeFile(temporary, `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
  await rename(temporary, file);
}
