import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig } from '../../service/config';
import { HANDLED_EVENT_TYPES } from '../../service/webhook/handledEventTypes';
import { shutdownGraceMillis } from '../../service/main';
import { stripeApiVersion } from '../../service/stripeApi';
import { backupScript } from '../backupSchedule';
import { healthcheck, healthWaitSeconds, replicaRolloutPlan, resolverValidSeconds } from '../rollout';
import { serviceHealthcheck } from '../serviceImage';
import {
  endpointType,
  isSecretInput,
  mockCreatedSecret,
  mockImageId,
  plainStrings,
  runProgram,
  secretValues,
  stackConfig,
  unwrap,
  type ProgramRun,
  type Registration,
  type StackName,
} from './support/programUnderMocks';

// The provider's code is serialized (and run) for real in stripeWebhookEndpoint.test.ts; here the
// closure serializer, which needs the whole module graph outside jest's sandbox, is stubbed.
jest.mock('@pulumi/pulumi/runtime/closure/serializeClosure', () => ({
  serializeFunction: async () => ({ text: 'exports.handler = () => ({});', exportName: 'handler', containsSecrets: false }),
}));

const containerType = 'docker:index/container:Container';

function containers(run: ProgramRun): Registration[] {
  return run.byType(containerType);
}

function replicas(run: ProgramRun): Registration[] {
  return containers(run).filter((container) => /^api-\d+$/.test(container.name));
}

function envOf(container: Registration): string[] {
  return unwrap(container.inputs.envs) as string[];
}

describe.each<StackName>(['test', 'live'])('the %s stack', (stack) => {
  let run: ProgramRun;
  beforeAll(async () => {
    run = await runProgram(stack);
  });

  test('creates the Docker provider, network, image, secret files, PostgreSQL and its backups, two replicas, nginx, the Stripe endpoint and its secret file', () => {
    const created = run.registrations.map((registration) => `${registration.type} ${registration.name}`).sort();
    expect(created).toEqual(
      [
        'docker:index/container:Container api-0',
        'docker:index/container:Container api-1',
        'docker:index/container:Container nginx',
        'docker:index/container:Container postgres',
        'docker:index/container:Container postgres-backups',
        'docker:index/container:Container secret-files',
        'docker:index/container:Container webhook-secret-file',
        'docker:index/image:Image service-image',
        'docker:index/network:Network private-network',
        'docker:index/remoteImage:RemoteImage nginx-image',
        'docker:index/remoteImage:RemoteImage postgres-image',
        'docker:index/remoteImage:RemoteImage service-image-on-host',
        'docker:index/volume:Volume postgres-data',
        `${endpointType} stripe-webhook-endpoint`,
        'pulumi:providers:docker docker-host',
      ].sort(),
    );
    expect(run.one('pulumi:providers:docker', 'docker-host').inputs.host).toBe('unix:///var/run/docker.sock');
  });

  test('every secret value appears only inside a Pulumi secret, in every resource input', () => {
    const leaks = run.registrations.flatMap((registration) =>
      plainStrings(registration.inputs)
        .filter(({ text }) => Object.values(secretValues).some((secret) => text.includes(secret)))
        .map(({ path }) => `${registration.type} ${registration.name}: ${path}`),
    );
    expect(leaks).toEqual([]);
    // and the inputs that carry them are secrets indeed
    const endpoint = run.one(endpointType, 'stripe-webhook-endpoint');
    expect(isSecretInput(endpoint.inputs.apiKey)).toBe(true);
    expect(isSecretInput(run.one(containerType, 'secret-files').inputs.uploads)).toBe(true);
    expect(isSecretInput(run.one(containerType, 'webhook-secret-file').inputs.uploads)).toBe(true);
    expect(isSecretInput(run.one(containerType, 'nginx').inputs.uploads)).toBe(true);
    const written = JSON.stringify([unwrap(run.one(containerType, 'secret-files').inputs.uploads), unwrap(run.one(containerType, 'webhook-secret-file').inputs.uploads)]);
    for (const secret of [mockCreatedSecret, secretValues.postgresPassword, secretValues.jwtSecret, secretValues.serviceApiToken]) expect(written).toContain(secret);
  });

  test('the stack outputs hold no secret, and the fingerprint is of the signing secret, not the secret', async () => {
    expect(run.exportNames.sort()).toEqual(['mode', 'nginxContainer', 'serviceContainers', 'webhookEndpointId', 'webhookSecretFingerprint', 'webhookUrl']);
    const values = await Promise.all(run.exportNames.map((name) => run.output(name)));
    const serialized = JSON.stringify(values);
    for (const secret of Object.values(secretValues)) expect(serialized).not.toContain(secret);
    for (const name of run.exportNames) await expect(run.isSecret(name)).resolves.toBe(false);
    await expect(run.output('webhookSecretFingerprint')).resolves.toBe(
      createHash('sha256').update(mockCreatedSecret).digest('hex').slice(0, 12),
    );
  });

  test('exports the webhook URL, endpoint id and mode', async () => {
    const domain = stack === 'live' ? 'billing.example.com' : 'billing-test.example.com';
    await expect(run.output('webhookUrl')).resolves.toBe(`https://${domain}/api/v1/billing/stripe/webhook`);
    await expect(run.output('webhookEndpointId')).resolves.toBe('we_mockCreatedEndpoint');
    await expect(run.output('mode')).resolves.toBe(stack);
  });

  test('no container carries a secret in its env, labels, command or entrypoint; the service gets *_FILE paths', () => {
    for (const container of containers(run)) {
      for (const field of ['envs', 'labels', 'command', 'entrypoints']) {
        const value = container.inputs[field];
        expect(isSecretInput(value)).toBe(false);
        const text = JSON.stringify(value ?? null);
        for (const secret of Object.values(secretValues)) expect(text).not.toContain(secret);
      }
    }
    for (const replica of replicas(run)) {
      const env = envOf(replica);
      expect(env).toEqual(
        expect.arrayContaining([
          'STRIPE_WEBHOOK_SECRET_FILE=/run/secrets/stripe-credits/stripe_webhook_secret',
          'STRIPE_API_KEY_FILE=/run/secrets/stripe-credits/stripe_api_key',
          'DATABASE_URL_FILE=/run/secrets/stripe-credits/database_url',
          'AUTH_JWT_SECRET_FILE=/run/secrets/stripe-credits/auth_jwt_secret',
          'SERVICE_API_TOKEN_FILE=/run/secrets/stripe-credits/service_api_token',
          `STRIPE_MODE=${stack}`,
          'NODE_ENV=production',
        ]),
      );
      expect(env.filter((entry) => /^(STRIPE_WEBHOOK_SECRET|STRIPE_API_KEY|DATABASE_URL|AUTH_JWT_SECRET|SERVICE_API_TOKEN)=/.test(entry))).toEqual([]);
    }
  });

  test('only nginx publishes ports: 443 and 80', () => {
    const publishing = containers(run).filter((container) => (unwrap(container.inputs.ports) as unknown[] | undefined)?.length);
    expect(publishing.map((container) => container.name)).toEqual(['nginx']);
    expect(unwrap(publishing[0]?.inputs.ports)).toEqual([
      { internal: 443, external: 443 },
      { internal: 80, external: 80 },
    ]);
  });

  test('every replica mounts the service secrets directory read-only, as a directory, and runs as the service user', () => {
    expect(replicas(run)).toHaveLength(2);
    for (const replica of replicas(run)) {
      expect(unwrap(replica.inputs.mounts)).toEqual([
        { type: 'bind', source: `/srv/stripe-credits/${stack}/secrets/service`, target: '/run/secrets/stripe-credits', readOnly: true },
      ]);
      expect(replica.inputs).toMatchObject({ user: '1000:1000', readOnly: true, restart: 'unless-stopped', wait: true, memory: 512, cpus: '1' });
      expect(replica.inputs.healthcheck).toMatchObject({ tests: expect.arrayContaining([expect.stringContaining('/readyz')]) });
      expect(replica.inputs.logOpts).toEqual({ 'max-size': '10m', 'max-file': '5' });
    }
  });

  test('the secret files are installed by root, network-less one-shot containers into the host secrets directory', () => {
    const files = (writer: Registration) =>
      (unwrap(writer.inputs.uploads) as Array<{ file: string; permissions: string }>).map((upload) => [upload.file, upload.permissions]);
    for (const name of ['secret-files', 'webhook-secret-file']) {
      expect(run.one(containerType, name).inputs).toMatchObject({
        user: '0:0',
        networkMode: 'none',
        attach: true,
        mustRun: false,
        volumes: [{ hostPath: `/srv/stripe-credits/${stack}/secrets`, containerPath: '/target' }],
      });
    }
    expect(files(run.one(containerType, 'secret-files'))).toEqual([
      ['/run/secret-files/install.sh', '0500'],
      ['/run/secret-files/service/stripe_api_key', '0400'],
      ['/run/secret-files/service/database_url', '0400'],
      ['/run/secret-files/service/database_password', '0400'],
      ['/run/secret-files/service/auth_jwt_secret', '0400'],
      ['/run/secret-files/service/service_api_token', '0400'],
      ['/run/secret-files/postgres/postgres_password', '0400'],
    ]);
    expect(files(run.one(containerType, 'webhook-secret-file'))).toEqual([
      ['/run/secret-files/install.sh', '0500'],
      ['/run/secret-files/service/stripe_webhook_secret', '0400'],
    ]);
  });

  test('registers the endpoint for exactly the service’s handled event types, at its pinned API version, naming the stack', () => {
    const endpoint = run.one(endpointType, 'stripe-webhook-endpoint');
    expect(endpoint.inputs.enabledEvents).toEqual([...HANDLED_EVENT_TYPES]);
    expect(endpoint.inputs).toMatchObject({
      mode: stack,
      apiVersion: stripeApiVersion,
      apiBase: 'https://api.stripe.com',
      description: expect.stringContaining(`(${stack} stack)`),
      metadata: { project: 'stripe-credits', stack, managed_by: 'pulumi' },
      disabled: false,
      adoptId: '',
    });
  });

  test('PostgreSQL publishes nothing, keeps its data in a volume and reads its password from a file', () => {
    const postgres = run.one(containerType, 'postgres');
    expect(postgres.inputs.ports).toBeUndefined();
    expect(envOf(postgres)).toContain('POSTGRES_PASSWORD_FILE=/run/secrets/postgres/postgres_password');
    expect(unwrap(postgres.inputs.mounts)).toEqual([
      { type: 'volume', source: `stripe-credits-${stack}-pgdata`, target: '/var/lib/postgresql/data' },
      { type: 'bind', source: `/srv/stripe-credits/${stack}/secrets/postgres`, target: '/run/secrets/postgres', readOnly: true },
    ]);
    const installed = (name: string) =>
      unwrap((unwrap(run.one(containerType, 'secret-files').inputs.uploads) as Array<{ file: string; content: unknown }>).find((upload) => upload.file.endsWith(`/${name}`))?.content);
    // The password apart from the URL, in a file the service reads for every new connection: it can be rotated.
    expect(installed('database_url')).toBe('postgres://stripe_credits@postgres:5432/stripe_credits\n');
    expect(installed('database_password')).toBe(`${secretValues.postgresPassword}\n`);
    for (const replica of replicas(run)) expect(envOf(replica)).toContain('DATABASE_PASSWORD_FILE=/run/secrets/stripe-credits/database_password');
  });
});

test('a live stack refuses a test key, and a test stack a live key, before any resource exists', async () => {
  await expect(runProgram('live', { stripeApiKey: secretValues.testKey })).rejects.toThrow(/test-mode key but this stack's stripeMode is live/);
  await expect(runProgram('test', { stripeApiKey: secretValues.liveKey })).rejects.toThrow(/live-mode key but this stack's stripeMode is test/);
  await expect(runProgram('test', { stripeApiKey: secretValues.liveKey })).rejects.not.toThrow(secretValues.liveKey);
});

test('the replicas setting decides how many service containers run', async () => {
  const run = await runProgram('test', { replicas: '3' });
  expect(replicas(run).map((replica) => replica.name)).toEqual(['api-0', 'api-1', 'api-2']);
});

test('with an external database URL no database container, volume or password exists, and the URL reaches the service as a secret file', async () => {
  const run = await runProgram('live', { databaseUrl: secretValues.databaseUrl, postgresPassword: null });
  const kinds = run.registrations.map((registration) => registration.name);
  expect(kinds).not.toEqual(expect.arrayContaining(['postgres']));
  expect(kinds).not.toContain('postgres-data');
  expect(kinds).not.toContain('postgres-image');
  expect(kinds).not.toContain('postgres-backups'); // a managed database has backups of its own
  const uploads = unwrap(run.one(containerType, 'secret-files').inputs.uploads) as Array<{ file: string; content: unknown }>;
  expect(uploads.map((upload) => upload.file)).not.toContain('/run/secret-files/postgres/postgres_password');
  expect(unwrap(uploads.find((upload) => upload.file.endsWith('/database_url'))?.content)).toBe(`${secretValues.databaseUrl}\n`);
});

test('without a database URL, a missing PostgreSQL password stops the deployment naming the key', async () => {
  await expect(runProgram('test', { postgresPassword: null })).rejects.toThrow(/postgresPassword is not set: pulumi config set --secret postgresPassword/);
});

test('a new signing secret changes the webhook secret file only: the replicas stay as they are', async () => {
  const before = await runProgram('test');
  const after = await runProgram('test', { stripeWebhookSecret: secretValues.suppliedSecret });

  const unchanged = (run: ProgramRun) => [...replicas(run), run.one(containerType, 'secret-files')].map((container) => [container.inputs, unwrap(container.options.replacementTrigger)]);
  expect(unchanged(after)).toEqual(unchanged(before));
  const written = (run: ProgramRun) => JSON.stringify(unwrap(run.one(containerType, 'webhook-secret-file').inputs.uploads));
  expect(written(after)).toContain(secretValues.suppliedSecret);
  expect(written(before)).not.toContain(secretValues.suppliedSecret);
});

test('adopting an endpoint passes its id and the secret from config to the provider', async () => {
  const run = await runProgram('test', { stripeWebhookEndpointId: 'we_existingOne', stripeWebhookSecret: secretValues.suppliedSecret });
  const endpoint = run.one(endpointType, 'stripe-webhook-endpoint');
  expect(endpoint.inputs.adoptId).toBe('we_existingOne');
  expect(isSecretInput(endpoint.inputs.suppliedSecret)).toBe(true);
  await expect(run.output('webhookEndpointId')).resolves.toBe('we_existingOne');
  await expect(runProgram('test', { stripeWebhookEndpointId: 'we_existingOne' })).rejects.toThrow(/stripeWebhookSecret/);
});

test('nginx gets a body limit equal to the service’s, the rate limit from config, and the TLS files', async () => {
  const run = await runProgram('test', { webhookMaxBodyBytes: '65536', webhookRateLimitPerSecond: '40', webhookRateLimitBurst: '90', httpsPort: '8443' });
  const nginx = run.one(containerType, 'nginx');
  const uploads = unwrap(nginx.inputs.uploads) as Array<{ file: string; content: unknown; permissions: string }>;
  const config = String(unwrap(uploads.find((upload) => upload.file === '/etc/nginx/nginx.conf')?.content));
  expect(config).toContain('client_max_body_size 65536;');
  expect(config).toContain('rate=40r/s');
  expect(config).toContain('burst=90 nodelay');
  expect(config).toContain('set $billing_upstream http://billing-api:3000;');
  for (const replica of replicas(run)) expect(envOf(replica)).toContain('WEBHOOK_MAX_BODY_BYTES=65536');
  expect(uploads.map((upload) => [upload.file, upload.permissions])).toEqual([
    ['/etc/nginx/nginx.conf', '0444'],
    ['/etc/nginx/tls/tls.crt', '0444'],
    ['/etc/nginx/tls/tls.key', '0400'],
  ]);
  expect(unwrap(nginx.inputs.ports)).toEqual([
    { internal: 443, external: 8443 },
    { internal: 80, external: 80 },
  ]);
  await expect(run.output('webhookUrl')).resolves.toBe('https://billing-test.example.com:8443/api/v1/billing/stripe/webhook');
});

test('a remote Docker host from config is used for every Docker resource', async () => {
  const run = await runProgram('live', { dockerHost: 'ssh://deploy@docker.example.com' });
  expect(run.one('pulumi:providers:docker', 'docker-host').inputs.host).toBe('ssh://deploy@docker.example.com');
});

test('as `pulumi up` runs it (node --import tsx, working directory infra/), the program reads files named relative to the project and its endpoint provider serializes without a secret', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'program-under-tsx-'));
  try {
    const projectDir = path.join(__dirname, '..', '..');
    const catalog = path.join(dir, 'catalog.json');
    writeFileSync(catalog, JSON.stringify({ packages: { price_underTsx: { credits: 10 } } }));
    // Paths as an operator writes them in the stack configuration: relative to the folder of Pulumi.yaml.
    const { values, secretKeys } = stackConfig('test', { creditCatalogFile: catalog });
    for (const key of ['tlsCertificateFile', 'tlsKeyFile', 'creditCatalogFile']) {
      values[`stripe-credits:${key}`] = path.relative(projectDir, values[`stripe-credits:${key}`] as string);
    }
    const input = path.join(dir, 'config.json');
    writeFileSync(input, JSON.stringify({ stack: 'test', values, secretKeys }));
    const output = execFileSync(process.execPath, ['--import', 'tsx', path.join(__dirname, 'support', 'loadProgramUnderTsx.ts'), input], {
      cwd: path.join(projectDir, 'infra'),
      env: { ...process.env, PULUMI_NODEJS_ROOT_DIRECTORY: projectDir }, // as the CLI sets it
      encoding: 'utf8',
    });
    const { types, serializedProviders, outputs } = JSON.parse(output) as { types: string[]; serializedProviders: string[]; outputs: unknown[] };

    expect(types).toHaveLength(15);
    expect(serializedProviders).toHaveLength(1);
    expect(serializedProviders[0]).toContain('/v1/webhook_endpoints');
    expect(serializedProviders[0]).not.toMatch(/require\(/);
    for (const secret of Object.values(secretValues)) expect(serializedProviders[0]).not.toContain(secret);
    expect(outputs).toContain('https://billing-test.example.com/api/v1/billing/stripe/webhook');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

describe('the credit catalog', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'catalog-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const catalogFile = (credits: number) => {
    const file = path.join(dir, `catalog-${credits}.json`);
    writeFileSync(file, JSON.stringify({ packages: { price_catalogTest: { credits, name: `${credits} credits` } } }));
    return file;
  };

  test('reaches the read-only replicas as a file of their read-only secrets mount, not as an upload Docker would refuse', async () => {
    const run = await runProgram('test', { creditCatalogFile: catalogFile(1000) });

    for (const replica of replicas(run)) {
      expect(replica.inputs.readOnly).toBe(true);
      expect(unwrap(replica.inputs.uploads) ?? []).toEqual([]);
      expect(envOf(replica)).toContain('CREDIT_CATALOG_FILE=/run/secrets/stripe-credits/credit_catalog');
      expect(unwrap(replica.inputs.mounts)).toEqual([expect.objectContaining({ target: '/run/secrets/stripe-credits', readOnly: true })]);
    }
    const uploads = unwrap(run.one(containerType, 'secret-files').inputs.uploads) as Array<{ file: string; content: unknown }>;
    const installed = uploads.find((upload) => upload.file === '/run/secret-files/service/credit_catalog');
    expect(JSON.parse(String(unwrap(installed?.content)))).toEqual({ packages: { price_catalogTest: { credits: 1000, name: '1000 credits' } } });
  });

  test('a changed catalog replaces the replicas, which read it once at start', async () => {
    const trigger = async (credits: number) => unwrap(replicas(await runProgram('test', { creditCatalogFile: catalogFile(credits) }))[0]?.options.replacementTrigger);

    const first = await trigger(1000);
    expect(first).toEqual(expect.any(String));
    expect(await trigger(1000)).toBe(first);
    expect(await trigger(2000)).not.toBe(first);
  });
});

test('images are built and pulled for the Docker host’s platform (linux/amd64 unless configured), not the machine running Pulumi', async () => {
  const platforms = (run: ProgramRun) => [
    (run.one('docker:index/image:Image', 'service-image').inputs.build as { platform?: string }).platform,
    ...['postgres-image', 'nginx-image'].map((name) => run.one('docker:index/remoteImage:RemoteImage', name).inputs.platform),
  ];
  expect(platforms(await runProgram('test'))).toEqual(['linux/amd64', 'linux/amd64', 'linux/amd64']);
  expect(platforms(await runProgram('test', { platform: 'linux/arm64' }))).toEqual(['linux/arm64', 'linux/arm64', 'linux/arm64']);
  await expect(runProgram('test', { platform: 'arm64' })).rejects.toThrow(/platform must be the Docker host's platform/);
});

test('PostgreSQL and nginx run images pinned by digest; a floating tag stops the deployment', async () => {
  const run = await runProgram('live');
  for (const name of ['postgres-image', 'nginx-image']) {
    expect(run.one('docker:index/remoteImage:RemoteImage', name).inputs.name).toMatch(/^[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}$/);
  }
  await expect(runProgram('live', { nginxImage: 'nginx:1.22' })).rejects.toThrow(/nginxImage must be pinned by digest/);
  await expect(runProgram('live', { postgresImage: 'postgres:17' })).rejects.toThrow(/postgresImage must be pinned by digest/);
});

test('nginx serves the host’s ACME webroot read-only, for certbot’s webroot mode', async () => {
  const nginx = (await runProgram('live')).one(containerType, 'nginx');
  expect(unwrap(nginx.inputs.volumes)).toEqual([{ hostPath: '/srv/stripe-credits/live/acme', containerPath: '/var/www/acme', readOnly: true }]);
  const uploads = unwrap(nginx.inputs.uploads) as Array<{ file: string; content: unknown }>;
  expect(String(unwrap(uploads.find((upload) => upload.file === '/etc/nginx/nginx.conf')?.content))).toContain('root /var/www/acme;');
});

test('containers stop gracefully when replaced or removed: PostgreSQL gets a minute and more, a replica more than its drain', async () => {
  const run = await runProgram('test');
  const grace = (container: Registration) => ({ destroy: container.inputs.destroyGraceSeconds as number, stop: container.inputs.stopTimeout as number });
  const drainSeconds = shutdownGraceMillis / 1000;

  expect(grace(run.one(containerType, 'postgres')).destroy).toBeGreaterThanOrEqual(60);
  expect(grace(run.one(containerType, 'postgres')).stop).toBeGreaterThanOrEqual(60);
  for (const replica of replicas(run)) {
    expect(grace(replica).destroy).toBeGreaterThan(drainSeconds);
    expect(grace(replica).stop).toBeGreaterThan(drainSeconds);
  }
  expect(grace(run.one(containerType, 'nginx')).destroy).toBeGreaterThan(0);
});

describe('what the deployment depends on, each property checked so that removing it fails a test', () => {
  let run: ProgramRun;
  beforeAll(async () => {
    run = await runProgram('live', { replicas: '3' });
  });
  const dependenciesOf = (name: string) => run.registrations.find((registration) => registration.name === name)?.options.dependsOn ?? [];

  test('replicas and the secret writers run the built image by its ID (repoDigest), never by its name', () => {
    const built = run.one('docker:index/image:Image', 'service-image');
    const runs = [...replicas(run), run.one(containerType, 'secret-files'), run.one(containerType, 'webhook-secret-file')];
    for (const container of runs) expect({ container: container.name, image: container.inputs.image }).toEqual({ container: container.name, image: mockImageId });
    expect(built.inputs.imageName).not.toBe(mockImageId);
  });

  test('the previous build is deleted once nothing runs it: an image resource that deletes, which every user of the build depends on', () => {
    expect(run.one('docker:index/remoteImage:RemoteImage', 'service-image-on-host').inputs).toMatchObject({ name: mockImageId, keepLocally: false });
    for (const container of [...replicas(run), run.one(containerType, 'secret-files'), run.one(containerType, 'webhook-secret-file')]) {
      expect(container.options.dependsOn).toContain('service-image-on-host');
    }
  });

  test('an update replaces the replicas one after another, create before delete, each waited for until healthy', () => {
    const chain = replicas(run);
    chain.forEach((replica, index) => {
      expect(replica.inputs.name).toBeUndefined(); // Docker names it: the replacement can run beside it
      expect(replica.options.deleteBeforeReplace).toBe(false);
      expect(replica.inputs).toMatchObject({ wait: true, waitTimeout: healthWaitSeconds });
      const previous = chain[index - 1];
      if (previous) expect(replica.options.dependsOn).toContain(previous.name);
      else expect(replica.options.dependsOn.filter((name) => /^api-/.test(name))).toEqual([]);
    });
  });

  test('the rollout test runs the plan these options make Pulumi follow', () => {
    // Create-before-delete replacements are created in dependency order; the replaced ones are deleted
    // at the end, dependents first (pulumi/pulumi#9979).
    const chain: string[] = [];
    const remaining = replicas(run);
    while (remaining.length > 0) {
      const next = remaining.findIndex((replica) => replica.options.dependsOn.filter((name) => /^api-/.test(name)).every((name) => chain.includes(name)));
      chain.push(...remaining.splice(next, 1).map((replica) => replica.name));
    }
    const index = (name: string) => Number(name.slice('api-'.length));
    expect(replicaRolloutPlan(3)).toEqual([
      ...chain.map((name) => ({ action: 'start', replica: index(name) })),
      ...[...chain].reverse().map((name) => ({ action: 'stop', replica: index(name) })),
    ]);
  });

  test('nginx knows a new replica before an old one stops, and retries a refused or failed connection on another replica', () => {
    expect(resolverValidSeconds).toBeLessThan(healthcheck.intervalSeconds);
    const replica = replicas(run)[0] as Registration;
    expect(replica.inputs.healthcheck).toMatchObject({ interval: `${healthcheck.intervalSeconds}s` });
    const config = nginxConfigOf(run);
    expect(config).toContain(`resolver 127.0.0.11 valid=${resolverValidSeconds}s`);
    expect(config).toMatch(/proxy_next_upstream error timeout;/);
    const webhook = /location = \/api\/v1\/billing\/stripe\/webhook \{([\s\S]*?)\n {8}\}/.exec(config)?.[1] ?? '';
    expect(webhook).toContain('proxy_next_upstream error timeout non_idempotent;');
  });

  test('health checks: PostgreSQL and every replica are waited for until healthy', () => {
    expect(run.one(containerType, 'postgres').inputs).toMatchObject({
      healthcheck: { tests: ['CMD-SHELL', 'pg_isready -U stripe_credits -d stripe_credits'] },
      wait: true,
    });
    for (const replica of replicas(run)) expect(replica.inputs).toMatchObject({ healthcheck: { tests: serviceHealthcheck }, wait: true });
  });

  test('restart policies: PostgreSQL, the replicas and nginx come back after a crash or a host reboot; the one-shot writers do not', () => {
    const restart = (name: string) => run.one(containerType, name).inputs.restart;
    expect(['postgres', 'nginx', ...replicas(run).map((replica) => replica.name)].map(restart)).toEqual(Array(5).fill('unless-stopped'));
    expect(['secret-files', 'webhook-secret-file'].map(restart)).toEqual(['no', 'no']);
  });

  test('read-only: the replicas’ root filesystem and every mount of secrets or challenges into a long-running container', () => {
    for (const replica of replicas(run)) expect(replica.inputs.readOnly).toBe(true);
    const mounts = ['postgres', 'nginx', ...replicas(run).map((replica) => replica.name)].flatMap((name) => {
      const inputs = run.one(containerType, name).inputs;
      return [...((unwrap(inputs.mounts) as Array<{ type: string; readOnly?: boolean; target: string }> | undefined) ?? []), ...((unwrap(inputs.volumes) as Array<{ readOnly?: boolean; containerPath: string }> | undefined) ?? [])];
    });
    const binds = mounts.filter((mount) => !('type' in mount) || mount.type === 'bind');
    expect(binds).toHaveLength(5); // postgres secrets, nginx ACME webroot, three replicas' secrets
    for (const bind of binds) expect(bind).toMatchObject({ readOnly: true });
  });

  test('order: files, then PostgreSQL, then the replicas, then nginx, then the endpoint (its URL served), then its secret file', () => {
    expect(dependenciesOf('postgres')).toContain('secret-files');
    for (const replica of replicas(run)) expect(replica.options.dependsOn).toEqual(expect.arrayContaining(['secret-files', 'postgres']));
    expect(dependenciesOf('nginx')).toEqual(expect.arrayContaining(replicas(run).map((replica) => replica.name)));
    expect(dependenciesOf('stripe-webhook-endpoint')).toEqual(expect.arrayContaining(['nginx', ...replicas(run).map((replica) => replica.name)]));
    expect(dependenciesOf('webhook-secret-file')).toContain('stripe-webhook-endpoint');
    for (const name of ['secret-files', 'postgres', 'nginx', ...replicas(run).map((replica) => replica.name)]) {
      expect({ name, waitsForTheEndpoint: dependenciesOf(name).includes('stripe-webhook-endpoint') }).toEqual({ name, waitsForTheEndpoint: false });
    }
  });

  test('until the endpoint exists the replicas start with a placeholder webhook secret the first writer creates, and never overwrites', () => {
    const script = String(
      unwrap((unwrap(run.one(containerType, 'secret-files').inputs.uploads) as Array<{ file: string; content: unknown }>)[0]?.content),
    );
    expect(script).toContain('install_placeholder service 1000 stripe_webhook_secret');
    expect(script).toMatch(/! -name stripe_webhook_secret /);
  });

  test('the endpoint is registered at the stack’s webhook URL for the handled events', () => {
    expect(run.one(endpointType, 'stripe-webhook-endpoint').inputs).toMatchObject({
      url: 'https://billing.example.com/api/v1/billing/stripe/webhook',
      enabledEvents: [...HANDLED_EVENT_TYPES],
    });
  });

  test('replacement triggers: a new API key, session key, spending token or external database URL replaces the replicas, which read them at start; a new database password does not', async () => {
    const trigger = async (overrides: Record<string, string | null>) => unwrap(replicas(await runProgram('live', overrides))[0]?.options.replacementTrigger);
    const base = await trigger({});
    expect(base).toEqual(expect.any(String));
    expect(await trigger({})).toBe(base);
    expect(await trigger({ stripeApiKey: 'sk_live_anotherKeyForTheLiveStack' })).not.toBe(base);
    expect(await trigger({ serviceStripeApiKey: 'rk_live_anotherRestrictedKey' })).not.toBe(base);
    expect(await trigger({ authJwtSecret: 'another-session-key-0123456789abcdef' })).not.toBe(base);
    expect(await trigger({ serviceApiToken: 'another-spending-token-0123456789abcdef' })).not.toBe(base);
    const external = await trigger({ databaseUrl: secretValues.databaseUrl, postgresPassword: '' });
    expect(external).not.toBe(base);
    expect(await trigger({ databaseUrl: secretValues.databaseUrl.replace('external-Never-Plain', 'rotated'), postgresPassword: '' })).not.toBe(external);
    expect(await trigger({ postgresPassword: 'another-password' })).toBe(base); // read again for every new connection
  });
});

function nginxConfigOf(run: ProgramRun): string {
  const uploads = unwrap(run.one(containerType, 'nginx').inputs.uploads) as Array<{ file: string; content: unknown }>;
  return String(unwrap(uploads.find((upload) => upload.file === '/etc/nginx/nginx.conf')?.content));
}

describe('Stripe keys and the API they go to', () => {
  const installed = (run: ProgramRun, file: string) =>
    unwrap((unwrap(run.one(containerType, 'secret-files').inputs.uploads) as Array<{ file: string; content: unknown }>).find((upload) => upload.file === file)?.content);

  test('the service reads Stripe with its own restricted key when one is set; the endpoint is managed with the deployment key', async () => {
    const run = await runProgram('live', { serviceStripeApiKey: secretValues.serviceLiveKey });

    expect(installed(run, '/run/secret-files/service/stripe_api_key')).toBe(`${secretValues.serviceLiveKey}\n`);
    expect(unwrap(run.one(endpointType, 'stripe-webhook-endpoint').inputs.apiKey)).toBe(secretValues.liveKey);
    const leaks = run.registrations.flatMap((registration) => plainStrings(registration.inputs).filter(({ text }) => text.includes(secretValues.serviceLiveKey)));
    expect(leaks).toEqual([]);
  });

  test('without a service key the service gets the deployment key', async () => {
    expect(installed(await runProgram('test'), '/run/secret-files/service/stripe_api_key')).toBe(`${secretValues.testKey}\n`);
  });

  test('a service key of the other mode stops the deployment', async () => {
    await expect(runProgram('live', { serviceStripeApiKey: secretValues.serviceTestKey })).rejects.toThrow(/serviceStripeApiKey is a test-mode key but this stack's stripeMode is live/);
  });

  test('a live stack refuses any Stripe API but Stripe’s own; a test stack may use a local fake', async () => {
    await expect(runProgram('live', { stripeApiBase: 'http://127.0.0.1:12111' })).rejects.toThrow(/stripeApiBase must be https:\/\/api\.stripe\.com in a live stack/);
    await expect(runProgram('live', { stripeApiBase: 'https://api.stripe.com.evil.example' })).rejects.toThrow(/stripeApiBase must be https:\/\/api\.stripe\.com/);
    const run = await runProgram('test', { stripeApiBase: 'http://127.0.0.1:12111' });
    expect(run.one(endpointType, 'stripe-webhook-endpoint').inputs.apiBase).toBe('http://127.0.0.1:12111');
  });
});

describe('the billing API’s settings', () => {
  const jwksUrl = 'https://login.example.com/.well-known/jwks.json';
  const successUrl = 'https://app.example.com/billing/?checkout=success&session_id={CHECKOUT_SESSION_ID}';
  const cancelUrl = 'https://app.example.com/billing/?checkout=cancelled';
  const installedFiles = (run: ProgramRun) =>
    (unwrap(run.one(containerType, 'secret-files').inputs.uploads) as Array<{ file: string; content: unknown }>)
      .filter((upload) => upload.file.startsWith('/run/secret-files/service/'))
      .map((upload) => ({ name: path.basename(upload.file), content: String(unwrap(upload.content)) }));
  const billingEnv = (run: ProgramRun) => envOf(replicas(run)[0]!).filter((entry) => /^(AUTH_|SERVICE_API_TOKEN|CORS_|BILLING_)/.test(entry));

  test('the service reads every one of them from what the program gives a replica (its env and installed files, through its own loadConfig)', async () => {
    const run = await runProgram('live', {
      corsAllowedOrigins: 'https://app.example.com, https://www.example.com',
      billingSuccessUrl: successUrl,
      billingCancelUrl: cancelUrl,
      authJwtIssuer: 'https://login.example.com/',
      authJwtAudience: 'billing-api',
    });
    const dir = mkdtempSync(path.join(os.tmpdir(), 'replica-secrets-'));
    try {
      for (const file of installedFiles(run)) writeFileSync(path.join(dir, file.name), file.content);
      const env = Object.fromEntries(envOf(replicas(run)[0]!).map((entry) => entry.replace('/run/secrets/stripe-credits/', `${dir}/`).split(/=(.*)/s).slice(0, 2)));
      expect(loadConfig(env)).toMatchObject({
        authJwtSecret: secretValues.jwtSecret,
        authJwksUrl: undefined,
        authJwtIssuer: 'https://login.example.com/',
        authJwtAudience: 'billing-api',
        serviceApiToken: secretValues.serviceApiToken,
        corsAllowedOrigins: ['https://app.example.com', 'https://www.example.com'],
        billingSuccessUrl: successUrl,
        billingCancelUrl: cancelUrl,
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('session tokens checked against the product’s key set: its URL in env and no key file; a key and a key set at once, or a key set over http, stop the deployment', async () => {
    const run = await runProgram('live', { authJwtSecret: '', authJwksUrl: jwksUrl });
    expect(billingEnv(run)).toEqual([`AUTH_JWKS_URL=${jwksUrl}`, 'SERVICE_API_TOKEN_FILE=/run/secrets/stripe-credits/service_api_token']);
    expect(installedFiles(run).map((file) => file.name)).not.toContain('auth_jwt_secret');

    await expect(runProgram('live', { authJwksUrl: jwksUrl })).rejects.toThrow(/authJwtSecret and authJwksUrl are both set/);
    await expect(runProgram('live', { authJwtSecret: '', authJwksUrl: 'http://login.example.com/jwks.json' })).rejects.toThrow(/authJwksUrl must be an https:\/\/ URL/);
  });

  test('without a session key, spending token, origins or return URLs the replicas get none of those settings (the routes stay off)', async () => {
    const run = await runProgram('test', { authJwtSecret: '', serviceApiToken: '' });
    expect(billingEnv(run)).toEqual([]);
    expect(installedFiles(run).map((file) => file.name).sort()).toEqual(['database_password', 'database_url', 'stripe_api_key']);
  });

  test('a key or token shorter than 32 bytes, a wildcard origin or one return URL without the other stop the deployment, naming the key', async () => {
    await expect(runProgram('test', { authJwtSecret: 'short-key' })).rejects.toThrow(/authJwtSecret is shorter than 32 bytes/);
    await expect(runProgram('test', { serviceApiToken: 'short-token' })).rejects.toThrow(/serviceApiToken is shorter than 32 bytes/);
    await expect(runProgram('test', { corsAllowedOrigins: 'https://*.example.com' })).rejects.toThrow(/corsAllowedOrigins takes exact origins/);
    await expect(runProgram('test', { billingSuccessUrl: successUrl })).rejects.toThrow(/billingSuccessUrl and billingCancelUrl go together/);
    await expect(runProgram('test', { billingSuccessUrl: 'app.example.com/ok', billingCancelUrl: cancelUrl })).rejects.toThrow(/billingSuccessUrl must be an absolute URL/);
  });
});

describe('the periodic replay setting', () => {
  const replayEnv = (run: ProgramRun) => replicas(run).map((replica) => envOf(replica).filter((entry) => entry.startsWith('STRIPE_REPLAY_')));

  test('stripeReplayIntervalSeconds reaches every replica, where the service reads it; off (absent) by default', async () => {
    const run = await runProgram('live', { stripeReplayIntervalSeconds: '300' });
    expect(replayEnv(run)).toEqual([['STRIPE_REPLAY_INTERVAL_SECONDS=300'], ['STRIPE_REPLAY_INTERVAL_SECONDS=300']]);
    // The variable's name and value are the ones the service's own loadConfig reads.
    const env = Object.fromEntries(replayEnv(run)[0]!.map((entry) => entry.split(/=(.*)/s).slice(0, 2)));
    const production = { NODE_ENV: 'production', STRIPE_MODE: 'live', STRIPE_API_KEY: 'sk_live_x', STRIPE_WEBHOOK_SECRET: 'whsec_x', DATABASE_URL: 'postgres://db/x' };
    expect(loadConfig({ ...production, ...env }).stripeReplayIntervalSeconds).toBe(300);
    expect(replayEnv(await runProgram('live'))).toEqual([[], []]);
    expect(replayEnv(await runProgram('test', { stripeReplayIntervalSeconds: '0' }))).toEqual([[], []]);
  });

  test('an interval out of range stops the deployment, naming the key', async () => {
    await expect(runProgram('test', { stripeReplayIntervalSeconds: '86401' })).rejects.toThrow(/stripeReplayIntervalSeconds must be a whole number from 0 to 86400/);
    await expect(runProgram('test', { stripeReplayIntervalSeconds: '-1' })).rejects.toThrow(/stripeReplayIntervalSeconds must be a whole number/);
  });
});

describe('backups and protection', () => {
  test('the stack’s PostgreSQL is dumped on a schedule into a host directory, with the retention from config, its password from its file', async () => {
    const run = await runProgram('test', { backupIntervalHours: '6', backupRetentionDays: '30' });
    const backups = run.one(containerType, 'postgres-backups');

    expect(backups.inputs.image).toBe(run.one(containerType, 'postgres').inputs.image); // the server's own pg_dump
    expect(envOf(backups)).toEqual(
      expect.arrayContaining(['PGHOST=postgres', 'PGDATABASE=stripe_credits', 'BACKUP_INTERVAL_SECONDS=21600', 'BACKUP_RETENTION_DAYS=30', 'BACKUP_PASSWORD_FILE=/run/secrets/postgres/postgres_password']),
    );
    expect(unwrap(backups.inputs.volumes)).toEqual([{ hostPath: '/srv/stripe-credits/test/backups', containerPath: '/backups' }]);
    expect(unwrap(backups.inputs.mounts)).toEqual([{ type: 'bind', source: '/srv/stripe-credits/test/secrets/postgres', target: '/run/secrets/postgres', readOnly: true }]);
    const script = (unwrap(backups.inputs.uploads) as Array<{ file: string; content: unknown }>)[0];
    expect(script).toMatchObject({ file: '/run/backup/backup.sh', content: backupScript() });
    expect((backups.inputs.entrypoints as string[]).join(' ')).toContain('exec gosu postgres /bin/sh /run/backup/backup.sh /backups');
    expect(backups.inputs).toMatchObject({ restart: 'unless-stopped', networksAdvanced: [expect.objectContaining({ name: expect.any(String) })] });
    expect(backups.options.dependsOn).toContain('postgres');
    expect(JSON.stringify(backups.inputs.envs)).not.toContain(secretValues.postgresPassword);
  });

  test('the live endpoint and the data volume are protected; the volume outlives the stack in every stack', async () => {
    const live = await runProgram('live');
    const test = await runProgram('test');
    expect(live.one(endpointType, 'stripe-webhook-endpoint').options.protect).toBe(true);
    expect(live.one('docker:index/volume:Volume', 'postgres-data').options).toMatchObject({ protect: true, retainOnDelete: true });
    expect(test.one(endpointType, 'stripe-webhook-endpoint').options.protect).toBe(false);
    expect(test.one('docker:index/volume:Volume', 'postgres-data').options).toMatchObject({ protect: false, retainOnDelete: true });
  });
});
