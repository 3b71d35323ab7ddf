import { spawn } from 'node:child_process';
import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseSecrets } from '../webhook/secretStore';
import { deliver } from './support/testApp';
import { checkoutSession, stripeEvent } from './support/stripeFixtures';
import { webhookPath } from '../webhook/route';

let dataDir: string;
beforeAll(async () => {
  dataDir = await mkdtemp(path.join(os.tmpdir(), 'startup-'));
  // As root the embedded PostgreSQL runs as the `postgres` user, which must be able to enter the data dir.
  await chmod(dataDir, 0o755);
});
afterAll(async () => {
  await rm(dataDir, { recursive: true, force: true });
});

// The service runs as its own process here, as `npm start` runs it.
function spawnMain(env: Record<string, string>) {
  const child = spawn(process.execPath, [require.resolve('tsx/cli'), path.resolve(__dirname, '../main.ts')], {
    env: { PATH: process.env.PATH ?? '', ...env },
  });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, exited, output: () => output };
}

function runMain(env: Record<string, string>): Promise<{ code: number | null; output: string }> {
  const run = spawnMain(env);
  return run.exited.then((code) => ({ code, output: run.output() }));
}

test('with no settings the service runs on an embedded PostgreSQL with a generated development secret', async () => {
  const run = spawnMain({ DATA_DIR: dataDir, PORT: '0' });
  try {
    const deadline = Date.now() + 45_000;
    let url: string | undefined;
    while (!url) {
      if (Date.now() > deadline) throw new Error(`service did not start:\n${run.output()}`);
      url = /"url":"(http:\/\/127\.0\.0\.1:\d+)"/.exec(run.output())?.[1];
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const secretFile = path.join(dataDir, 'webhook-secret');
    const [secret] = parseSecrets(await readFile(secretFile, 'utf8'), secretFile);
    expect(run.output()).toContain(`generated the development secret in ${secretFile}`);
    expect(run.output()).toContain('npm run send-test-event');
    expect(run.output()).not.toContain(secret!.value);

    const event = stripeEvent('checkout.session.completed', checkoutSession({ client_reference_id: 'user_embedded', metadata: { credits: '42' } }));
    const response = await deliver(`${url}${webhookPath}`, event, { secrets: [secret!.value] });
    expect(response.body).toEqual({ received: true, status: 'processed' });
    expect(await (await fetch(`${url}/readyz`)).json()).toEqual({ status: 'ready', problems: [] });

    run.child.kill('SIGTERM');
    expect(await run.exited).toBe(0);
  } finally {
    run.child.kill('SIGKILL');
  }
}, 60_000);

test('in production a missing setting stops the start with exit code 78 and names the variable', async () => {
  const { code, output } = await runMain({ NODE_ENV: 'production', STRIPE_MODE: 'test', STRIPE_WEBHOOK_SECRET: 'whsec_x', STRIPE_API_KEY: 'sk_test_hidden_value' });
  expect(code).toBe(78);
  expect(output).toContain('Missing required setting in production: DATABASE_URL or DATABASE_URL_FILE');
  expect(output).not.toContain('sk_test_hidden_value');
}, 30_000);
