import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fingerprintSecret } from '../../service/webhook/secretFingerprint';
import { parseSecrets } from '../../service/webhook/secretStore';

const script = path.resolve(__dirname, '../rotate-webhook-secret.sh');
const oldSecret = 'whsec_rotation_old_0000000000000000';
const newSecret = 'whsec_rotation_new_1111111111111111';

let dir: string;
let file: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'rotate-'));
  file = path.join(dir, 'stripe_webhook_secret');
  await writeFile(file, `${oldSecret}\n`, { mode: 0o600 });
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

function run(args: string[], stdin = ''): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile('bash', [script, ...args], (error, stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout, stderr });
    });
    // The script may exit before reading stdin (usage errors): that is not a test failure.
    child.stdin!.on('error', () => undefined);
    child.stdin!.end(stdin);
  });
}

test('add appends the secret read from stdin, keeps the file mode, and prints only fingerprints', async () => {
  const result = await run(['add', file], `${newSecret}\n`);
  expect(result.code).toBe(0);
  expect(parseSecrets(await readFile(file, 'utf8'), file).map((s) => s.value)).toEqual([oldSecret, newSecret]);
  expect((await stat(file)).mode & 0o777).toBe(0o600);
  expect(result.stdout).toBe(`1 ${fingerprintSecret(oldSecret)}\n2 ${fingerprintSecret(newSecret)}\n`);
  expect(result.stdout + result.stderr).not.toContain(newSecret);
});

test('retire removes the secret with the given fingerprint (the same fingerprint the service reports)', async () => {
  await run(['add', file], newSecret);
  const result = await run(['retire', fingerprintSecret(oldSecret), file]);
  expect(result.code).toBe(0);
  expect(await readFile(file, 'utf8')).toBe(`${newSecret}\n`);
});

test('retiring the last secret, an unknown fingerprint, or adding a non-secret is refused and changes nothing', async () => {
  expect((await run(['retire', fingerprintSecret(oldSecret), file])).stderr).toContain('refusing to retire the last secret');
  expect((await run(['retire', 'ffffffffffff', file])).code).toBe(1);
  const bad = await run(['add', file], 'sk_live_not_a_webhook_secret');
  expect(bad.code).toBe(1);
  expect(bad.stderr).not.toContain('sk_live_not_a_webhook_secret');
  expect(await readFile(file, 'utf8')).toBe(`${oldSecret}\n`);
});

test('without a command it prints its usage and exits 2', async () => {
  const result = await run([]);
  expect(result.code).toBe(2);
  expect(result.stderr).toContain('Usage:');
});
