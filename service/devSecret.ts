import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';

/**
 * Outside production, with no webhook secret configured, the service makes one up so that `npm start` just
 * works; `npm run send-test-event` signs with the same file. Never used when NODE_ENV=production.
 */
export async function ensureDevWebhookSecret(dataDir: string): Promise<string> {
  const filePath = path.join(dataDir, 'webhook-secret');
  const existing = await readFile(filePath, 'utf8').catch(() => '');
  if (!existing.trim()) {
    await mkdir(dataDir, { recursive: true });
    await writeFile(filePath, `whsec_dev_${randomBytes(24).toString('hex')}\n`, { mode: 0o600 });
  }
  return filePath;
}
