import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
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

function run(args: string[], stdin = '', env: NodeJS.ProcessEnv = process.env): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile('bash', [script, ...args], { env, cwd: dir }, (error, stdout, stderr) => {
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

test('--help prints the usage on stdout and exits 0, changing nothing', async () => {
  const result = await run(['add', '--help', file], newSecret);
  expect(result.code).toBe(0);
  expect(result.stdout).toMatch(/^Usage: scripts\/rotate-webhook-secret.sh add/);
  expect(result.stdout).toContain('FILE defaults to $STRIPE_WEBHOOK_SECRET_FILE');
  expect(await readFile(file, 'utf8')).toBe(`${oldSecret}\n`);
});

test('an unknown option or command prints the problem and the usage on stderr and exits 2, changing nothing', async () => {
  for (const args of [['add', '--force', file], ['rotate', file], ['retire']]) {
    const result = await run(args, newSecret);
    expect(result.code).toBe(2);
    expect(result.stdout).toBe('');
    expect(result.stderr).toContain('Usage:');
  }
  expect(await readFile(file, 'utf8')).toBe(`${oldSecret}\n`);
});

test('without FILE it uses STRIPE_WEBHOOK_SECRET_FILE and says so', async () => {
  const result = await run(['list'], '', { PATH: process.env.PATH, STRIPE_WEBHOOK_SECRET_FILE: file });
  expect(result.code).toBe(0);
  expect(result.stdout).toBe(`1 ${fingerprintSecret(oldSecret)}\n`);
  expect(result.stderr).toContain(`secrets file: ${file} (STRIPE_WEBHOOK_SECRET_FILE)`);
});

test('without FILE or STRIPE_WEBHOOK_SECRET_FILE it uses the development secret of npm start and says so', async () => {
  await writeFile(path.join(dir, 'webhook-secret'), `${newSecret}\n`);
  const inDataDir = await run(['list'], '', { PATH: process.env.PATH, DATA_DIR: dir });
  expect(inDataDir.stdout).toBe(`1 ${fingerprintSecret(newSecret)}\n`);
  expect(inDataDir.stderr).toContain(`secrets file: ${path.join(dir, 'webhook-secret')} (the development secret of npm start`);

  // The default data dir, .data, relative to where it runs (the repository root, like npm start).
  await mkdir(path.join(dir, '.data'));
  await writeFile(path.join(dir, '.data', 'webhook-secret'), `${oldSecret}\n`);
  const byDefault = await run(['list'], '', { PATH: process.env.PATH });
  expect(byDefault.stdout).toBe(`1 ${fingerprintSecret(oldSecret)}\n`);
  expect(byDefault.stderr).toContain('secrets file: .data/webhook-secret');
});
