/**
 * The image's runtime dependencies suffice. Without a Docker engine here, the Dockerfile's stages are
 * replayed on this machine, each in a folder of its own: its COPY and RUN lines as written (`npm run
 * build`, `npm ci --omit=dev`), its ENV and CMD; then the built service starts from the runtime folder,
 * where only production dependencies exist. Two steps stand in for what needs the image: the build
 * stage's full `npm ci` is this repository's installed node_modules (same lock file), and apt-get (tini)
 * is skipped.
 */
import { execFileSync, execSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { connectDatabase } from '../../service/db';
import { createLogger } from '../../service/logger';
import { freePort } from '../../service/test/support/freePort';
import { repositoryRoot, spawnServiceProcess, startServiceProcess, type ServiceProcess } from '../../service/test/support/serviceProcess';
import { checkoutSession, signedDelivery, stripeEvent } from '../../service/test/support/stripeFixtures';
import { databaseUrl, testServerUrl } from '../../service/test/support/testDatabase';
import { webhookPath } from '../../service/webhook/route';
import { dockerignoreFilter, readDockerfile } from './support/dockerfile';

const logger = createLogger('silent');
const webhookSecret = 'whsec_imageTestSecret';

interface ReplayedImage {
  dir: string;
  env: Record<string, string>;
  command: string[];
}

/** Replays the Dockerfile stage by stage; returns the runtime stage's folder, ENV and CMD. */
function replayDockerfile(workspace: string): ReplayedImage {
  const { stages } = readDockerfile(repositoryRoot);
  const inContext = dockerignoreFilter(repositoryRoot);
  const stageDirs: Record<string, string> = {};
  const workdirs: Record<string, string> = {};
  let env: Record<string, string> = {};
  let command: string[] = [];

  for (const stage of stages) {
    const dir = path.join(workspace, stage.name);
    mkdirSync(dir);
    stageDirs[stage.name] = dir;
    workdirs[stage.name] = '/';
    env = {};
    for (const instruction of stage.instructions.slice(1)) {
      const [keyword = '', ...words] = instruction.split(' ');
      const args = words.join(' ');
      switch (keyword) {
        case 'WORKDIR':
          workdirs[stage.name] = args;
          break;
        case 'ENV':
          for (const [, name, value] of args.matchAll(/(\w+)=(\S+)/g)) env[name as string] = value as string;
          break;
        case 'CMD':
          command = JSON.parse(args) as string[];
          break;
        case 'COPY': {
          const from = /^--from=(\S+)$/.exec(words[0] ?? '')?.[1];
          const paths = from ? words.slice(1) : words;
          const destination = paths.pop() as string;
          for (const source of paths) {
            const sourcePath = from
              ? path.join(stageDirs[from] as string, path.relative(workdirs[from] as string, source))
              : path.join(repositoryRoot, source);
            const target = destination.endsWith('/') ? path.join(dir, destination, path.basename(source)) : path.join(dir, destination);
            cpSync(sourcePath, target, {
              recursive: true,
              verbatimSymlinks: true,
              filter: (file) => from !== undefined || inContext(path.relative(repositoryRoot, file)),
            });
          }
          break;
        }
        case 'RUN':
          if (/^npm ci\b/.test(args) && !args.includes('--omit=dev')) symlinkSync(path.join(repositoryRoot, 'node_modules'), path.join(dir, 'node_modules'));
          else if (!/^apt-get\b/.test(args)) {
            execSync(args, { cwd: dir, stdio: 'pipe', env: { ...process.env, npm_config_prefer_offline: 'true', npm_config_update_notifier: 'false' } });
          }
          break;
        default: // FROM, USER, EXPOSE, HEALTHCHECK, ENTRYPOINT: properties of the container, not of the files
      }
    }
  }
  return { dir: stageDirs.runtime as string, env, command };
}

let workspace: string;
let image: ReplayedImage;
let databaseName: string;
let service: ServiceProcess | undefined;
let serviceUrl: string;

beforeAll(async () => {
  workspace = mkdtempSync(path.join(os.tmpdir(), 'image-replay-'));
  image = replayDockerfile(workspace);

  databaseName = `infra_image_${randomBytes(6).toString('hex')}`;
  const admin = connectDatabase({ connectionString: testServerUrl, poolMax: 1, logger });
  await admin.query(`CREATE DATABASE ${databaseName}`);
  await admin.close();

  const secrets = path.join(workspace, 'secrets');
  mkdirSync(secrets, { mode: 0o700 });
  const secretFile = (name: string, value: string) => {
    writeFileSync(path.join(secrets, name), `${value}\n`, { mode: 0o400 });
    return path.join(secrets, name);
  };
  const port = await freePort();
  serviceUrl = `http://127.0.0.1:${port}`;
  const [program = 'node', ...args] = image.command;
  expect(program).toBe('node');
  service = await startServiceProcess({
    name: 'service from the image',
    program: args,
    cwd: image.dir,
    port,
    env: {
      ...image.env,
      STRIPE_MODE: 'test',
      STRIPE_WEBHOOK_SECRET_FILE: secretFile('stripe_webhook_secret', webhookSecret),
      STRIPE_API_KEY_FILE: secretFile('stripe_api_key', 'sk_test_imageTestKey'),
      DATABASE_URL_FILE: secretFile('database_url', databaseUrl(databaseName)),
    },
  });
}, 300_000);

afterAll(async () => {
  await service?.stop();
  const admin = connectDatabase({ connectionString: testServerUrl, poolMax: 1, logger });
  await admin.query(`DROP DATABASE IF EXISTS ${databaseName} WITH (FORCE)`);
  await admin.close();
  rmSync(workspace, { recursive: true, force: true });
});

test('the runtime folder has the production dependencies and none of the development ones', () => {
  expect(image.env).toMatchObject({ NODE_ENV: 'production' });
  for (const dependency of ['koa', 'pg', 'stripe', 'pino', 'jose']) expect(existsSync(path.join(image.dir, 'node_modules', dependency))).toBe(true);
  for (const dependency of ['typescript', 'tsx', '@pulumi', 'jest', '@swc', '@electric-sql']) expect(existsSync(path.join(image.dir, 'node_modules', dependency))).toBe(false);
  expect(() => require.resolve('typescript', { paths: [image.dir] })).toThrow();
});

test('the built service starts from there, applies its shipped migrations and is ready', async () => {
  const ready = await fetch(`${serviceUrl}/readyz`);
  expect(ready.status).toBe(200);

  const database = connectDatabase({ connectionString: databaseUrl(databaseName), poolMax: 1, logger });
  try {
    const { rows } = await database.query<{ table: string | null }>(`SELECT to_regclass('public.service_subscriptions')::text AS table`);
    expect(rows[0]?.table).toBe('service_subscriptions');
  } finally {
    await database.close();
  }
});

test('it verifies and applies a signed webhook with production dependencies only', async () => {
  const delivery = signedDelivery(
    stripeEvent('checkout.session.completed', checkoutSession({ client_reference_id: 'user_image', metadata: { credits: '5' } })),
    [webhookSecret],
  );
  const response = await fetch(`${serviceUrl}${webhookPath}`, { method: 'POST', headers: delivery.headers, body: delivery.body });

  expect(response.status).toBe(200);
  await expect(response.json()).resolves.toEqual({ received: true, status: 'processed' });
});

test('the replay script answers there as README says (node dist/scripts/replay-events.js), with production dependencies only', () => {
  const run = (args: string[]) => execFileSync(process.execPath, ['dist/scripts/replay-events.js', ...args], { cwd: image.dir, env: { PATH: process.env.PATH, ...image.env }, encoding: 'utf8' });
  // Every module it imports (cli-progress, stripe, pg, the service's) loads before --help is answered.
  expect(run(['--help'])).toMatch(/^Usage: npm run replay-events\b[\s\S]*node dist\/scripts\/replay-events\.js/);
});

test('without DATABASE_URL outside production it says the embedded database is a development tool, and exits', async () => {
  const [, ...args] = image.command;
  const run = await spawnServiceProcess({ name: 'image without a database', program: args, cwd: image.dir, env: { NODE_ENV: 'development' } });
  expect((await run.exited).code).toBe(78); // A configuration error: it needs DATABASE_URL.
  const output = run.logLines.join('\n');
  expect(output).toContain('the embedded development database is not installed');
  expect(output).toContain('Set DATABASE_URL or DATABASE_URL_FILE');
});

test('it stops cleanly on SIGTERM, as tini forwards it in the container', async () => {
  const exit = await service?.stop();
  service = undefined;
  expect(exit?.code).toBe(0);
});
