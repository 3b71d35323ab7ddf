/**
 * The deployment, per stack (test or live): from a Docker host and Stripe keys to a working HTTPS,
 * rate-limited webhook. Read top to bottom: configuration, then each resource in the order it comes
 * up, then what the stack reports.
 */
import { createHash } from 'node:crypto';
import path from 'node:path';
import * as docker from '@pulumi/docker';
import * as pulumi from '@pulumi/pulumi';
import { stripeApiVersion } from '../service/stripeApi';
import { HANDLED_EVENT_TYPES } from '../service/webhook/handledEventTypes';
import { fingerprintSecret } from '../service/webhook/secretFingerprint';
import { backupPaths, backupScript } from './backupSchedule';
import { loadDeployConfig, projectRoot } from './config';
import { containerAcmeWebroot, containerRuntimeDir, renderNginxConfig } from './nginxConfig';
import { healthcheck, healthWaitSeconds, resolverValidSeconds, stopGraceSeconds } from './rollout';
import { secretMountPaths, secretWriterUploads, serviceUid, writerPaths, type SecretFile, type SecretWriterOptions } from './secretFiles';
import { serviceHealthcheck, servicePort } from './serviceImage';
import { StripeWebhookEndpoint } from './stripeWebhookEndpoint';

const cfg = loadDeployConfig();
const repoRoot = projectRoot();
const logs = { logDriver: 'json-file', logOpts: { 'max-size': '10m', 'max-file': '5' } };
const labels = (role: string) => [
  { label: 'stripe-credits.stack', value: cfg.stack },
  { label: 'stripe-credits.role', value: role },
];
/** Docker DNS name shared by every replica: nginx resolves it to all of them. */
const serviceAlias = 'billing-api';
const postgresAlias = 'postgres';
const webhookSecretFile = { reader: 'service', name: 'stripe_webhook_secret' } as const;

// The Docker host everything runs on: the local socket, or ssh://user@host for a remote one.
const dockerHost = new docker.Provider('docker-host', { host: cfg.dockerHost });
const onHost = { provider: dockerHost };

// A private network: PostgreSQL and the replicas are reachable only through it, nginx is the only door.
const network = new docker.Network('private-network', { name: `${cfg.namePrefix}-private`, labels: labels('network') }, onHost);

// The service image, built from the Dockerfile on the Docker host and never pushed anywhere; containers
// run it by its ID (repoDigest), so a new build replaces them and an unchanged one leaves them alone.
const image = new docker.Image(
  'service-image',
  {
    imageName: `${cfg.namePrefix}-service:latest`,
    // For the Docker host's platform: without it, an arm64 laptop would build arm64 for an amd64 server.
    build: { context: repoRoot, dockerfile: path.join(repoRoot, 'Dockerfile'), platform: cfg.platform },
    skipPush: true,
  },
  onHost,
);
// The same build as an image resource of its own: the build resource never deletes an image, this one
// deletes the previous build at the end of the update that replaced it, once no container runs it.
const imageOnHost = new docker.RemoteImage('service-image-on-host', { name: image.repoDigest, keepLocally: false }, onHost);

/** A one-shot container (the service image, as root, no network) that installs files into the host secrets directory. */
function fileWriter(name: string, files: SecretFile[], options: SecretWriterOptions, dependsOn: pulumi.Resource[]): docker.Container {
  const writer = new docker.Container(
    name,
    {
      name: `${cfg.namePrefix}-${name}`,
      image: image.repoDigest,
      user: '0:0',
      entrypoints: ['/bin/sh', writerPaths.script],
      networkMode: 'none',
      volumes: [{ hostPath: cfg.secretsDir, containerPath: writerPaths.target }],
      uploads: secretWriterUploads(files, options),
      attach: true,
      mustRun: false,
      restart: 'no',
      labels: labels(name),
      ...logs,
    },
    { ...onHost, deleteBeforeReplace: true, dependsOn: [imageOnHost, ...dependsOn] },
  );
  // A failed install fails the deployment (the replicas would not start without their files anyway).
  writer.exitCode.apply((code) => {
    if (typeof code === 'number' && code !== 0) {
      throw new Error(`Installing files on the Docker host failed (exit ${code}): see docker logs ${cfg.namePrefix}-${name}`);
    }
  });
  return writer;
}

// The database the service uses: the stack's own PostgreSQL container, its password in a file of its
// own that the service reads for every new connection (so that it can be rotated: README, Deploy); or
// the external one's URL.
const databaseUrl = cfg.database.kind === 'external' ? cfg.database.url : pulumi.output(`postgres://stripe_credits@${postgresAlias}:5432/stripe_credits`);
const databasePassword = cfg.database.kind === 'container' ? cfg.database.password : undefined;

// The billing API's keys: how session tokens are checked (a shared key as a file, or the product's key set),
// and the token of the product's back end for spending credits. Without them those routes stay off.
const { sessionKey, serviceApiToken } = cfg.service;

// The files the replicas and PostgreSQL read at start; rerun (replaced) whenever a value changes. The
// webhook signing secret comes later, from the endpoint: until then a placeholder nobody has.
const startupFiles: SecretFile[] = [
  { reader: 'service', name: 'stripe_api_key', value: cfg.stripe.serviceApiKey },
  { reader: 'service', name: 'database_url', value: databaseUrl },
  ...(databasePassword ? [{ reader: 'service' as const, name: 'database_password', value: databasePassword }] : []),
  ...(sessionKey?.kind === 'secret' ? [{ reader: 'service' as const, name: 'auth_jwt_secret', value: sessionKey.secret }] : []),
  ...(serviceApiToken ? [{ reader: 'service' as const, name: 'service_api_token', value: serviceApiToken }] : []),
  ...(cfg.database.kind === 'container' ? [{ reader: 'postgres' as const, name: 'postgres_password', value: cfg.database.password }] : []),
  // Not a secret, but delivered the same way: the replicas' root filesystem is read-only, so Docker cannot upload into it.
  ...(cfg.service.creditCatalog ? [{ reader: 'service' as const, name: 'credit_catalog', value: cfg.service.creditCatalog }] : []),
];
const secretWriter = fileWriter('secret-files', startupFiles, { keep: [webhookSecretFile], placeholder: webhookSecretFile }, []);

// PostgreSQL with a persistent volume, password from its secret file, no host port.
let database: docker.Container | undefined;
if (cfg.database.kind === 'container') {
  // Kept when the stack is destroyed or the volume replaced; in the live stack Pulumi refuses to try.
  const dataVolume = new docker.Volume(
    'postgres-data',
    { name: `${cfg.namePrefix}-pgdata`, labels: labels('postgres') },
    { ...onHost, retainOnDelete: true, protect: cfg.mode === 'live' },
  );
  const postgresImage = new docker.RemoteImage('postgres-image', { name: cfg.database.image, platform: cfg.platform, keepLocally: true }, onHost);
  database = new docker.Container(
    'postgres',
    {
      name: `${cfg.namePrefix}-postgres`,
      image: postgresImage.imageId,
      envs: ['POSTGRES_USER=stripe_credits', 'POSTGRES_DB=stripe_credits', `POSTGRES_PASSWORD_FILE=${secretMountPaths.postgres}/postgres_password`],
      mounts: [
        { type: 'volume', source: dataVolume.name, target: '/var/lib/postgresql/data' },
        { type: 'bind', source: `${cfg.secretsDir}/postgres`, target: secretMountPaths.postgres, readOnly: true },
      ],
      networksAdvanced: [{ name: network.name, aliases: [postgresAlias] }],
      healthcheck: { tests: ['CMD-SHELL', 'pg_isready -U stripe_credits -d stripe_credits'], interval: '5s', timeout: '3s', retries: 12, startPeriod: '30s' },
      wait: true,
      restart: 'unless-stopped',
      memory: 1024,
      stopTimeout: stopGraceSeconds.postgres,
      destroyGraceSeconds: stopGraceSeconds.postgres,
      labels: labels('postgres'),
      ...logs,
    },
    { ...onHost, deleteBeforeReplace: true, dependsOn: [secretWriter] },
  );

  // Backups: pg_dump every backupIntervalHours into a host directory, dumps kept backupRetentionDays
  // (scripts/restore-database restores one). It starts as root only to hand the directory to postgres.
  const { backups } = cfg.database;
  new docker.Container(
    'postgres-backups',
    {
      name: `${cfg.namePrefix}-postgres-backups`,
      image: postgresImage.imageId,
      user: '0:0',
      entrypoints: ['/bin/sh', '-c', `chown postgres:postgres ${backupPaths.target} && chmod 0700 ${backupPaths.target} && exec gosu postgres /bin/sh ${backupPaths.script} ${backupPaths.target}`],
      envs: [
        `PGHOST=${postgresAlias}`,
        'PGPORT=5432',
        'PGUSER=stripe_credits',
        'PGDATABASE=stripe_credits',
        `BACKUP_PASSWORD_FILE=${secretMountPaths.postgres}/postgres_password`,
        `BACKUP_INTERVAL_SECONDS=${backups.intervalHours * 3600}`,
        `BACKUP_RETENTION_DAYS=${backups.retentionDays}`,
      ],
      uploads: [{ file: backupPaths.script, content: backupScript(), permissions: '0555' }],
      mounts: [{ type: 'bind', source: `${cfg.secretsDir}/postgres`, target: secretMountPaths.postgres, readOnly: true }],
      // `volumes`, unlike `mounts`, creates the host directory when it is missing.
      volumes: [{ hostPath: backups.dir, containerPath: backupPaths.target }],
      networksAdvanced: [{ name: network.name }],
      restart: 'unless-stopped',
      memory: 512,
      stopTimeout: stopGraceSeconds.backups,
      destroyGraceSeconds: stopGraceSeconds.backups,
      labels: labels('postgres-backups'),
      ...logs,
    },
    { ...onHost, deleteBeforeReplace: true, dependsOn: [database] },
  );
}

// The service replicas: non-root, read-only, resource-limited, health-checked; secrets and the catalog
// only as files in a read-only directory mount. An update replaces them one after another, each new one
// healthy before the next starts, the old ones stopped (and drained) only then: see infra/rollout.ts.
// Files the service reads once at start replace them when they change (not the database password, read
// for every new connection, nor the webhook secret, watched).
const serviceSecrets = secretMountPaths.service;
const readAtStartDigest = pulumi.secret(
  pulumi
    .all([cfg.stripe.serviceApiKey, databaseUrl, sessionKey?.kind === 'secret' ? sessionKey.secret : '', serviceApiToken ?? '', cfg.service.creditCatalog ?? ''])
    .apply((values) => createHash('sha256').update(values.join('\n')).digest('hex')),
);

// The billing API: who may call it (session tokens, CORS origins, the spending token) and where Checkout
// returns the buyer. Plain settings go in env; the keys, as files.
const billingApiEnv = [
  ...(sessionKey?.kind === 'secret' ? [`AUTH_JWT_SECRET_FILE=${serviceSecrets}/auth_jwt_secret`] : []),
  ...(sessionKey?.kind === 'jwks' ? [`AUTH_JWKS_URL=${sessionKey.url}`] : []),
  ...(cfg.service.authJwtIssuer ? [`AUTH_JWT_ISSUER=${cfg.service.authJwtIssuer}`] : []),
  ...(cfg.service.authJwtAudience ? [`AUTH_JWT_AUDIENCE=${cfg.service.authJwtAudience}`] : []),
  ...(serviceApiToken ? [`SERVICE_API_TOKEN_FILE=${serviceSecrets}/service_api_token`] : []),
  ...(cfg.service.corsAllowedOrigins.length > 0 ? [`CORS_ALLOWED_ORIGINS=${cfg.service.corsAllowedOrigins.join(',')}`] : []),
  ...(cfg.service.checkoutUrls ? [`BILLING_SUCCESS_URL=${cfg.service.checkoutUrls.successUrl}`, `BILLING_CANCEL_URL=${cfg.service.checkoutUrls.cancelUrl}`] : []),
];
const replicas: docker.Container[] = [];
for (let index = 0; index < cfg.replicas; index++) {
  const previous = replicas.at(-1);
  replicas.push(
    new docker.Container(
      `api-${index}`,
      {
        // No fixed name: Docker names it, so that its replacement can run beside it.
        image: image.repoDigest,
        user: `${serviceUid}:${serviceUid}`,
        envs: [
          'NODE_ENV=production',
          'HOST=0.0.0.0',
          `PORT=${servicePort}`,
          `STRIPE_MODE=${cfg.mode}`,
          `STRIPE_API_BASE=${cfg.stripe.apiBase}`,
          `STRIPE_WEBHOOK_SECRET_FILE=${serviceSecrets}/${webhookSecretFile.name}`,
          `STRIPE_API_KEY_FILE=${serviceSecrets}/stripe_api_key`,
          `DATABASE_URL_FILE=${serviceSecrets}/database_url`,
          ...(databasePassword ? [`DATABASE_PASSWORD_FILE=${serviceSecrets}/database_password`] : []),
          ...(cfg.service.creditCatalog ? [`CREDIT_CATALOG_FILE=${serviceSecrets}/credit_catalog`] : []),
          ...billingApiEnv,
          `WEBHOOK_MAX_BODY_BYTES=${cfg.service.maxBodyBytes}`,
          // Opt-in: every replica runs the timer, one at a time replays (an advisory lock in PostgreSQL).
          ...(cfg.service.replayIntervalSeconds ? [`STRIPE_REPLAY_INTERVAL_SECONDS=${cfg.service.replayIntervalSeconds}`] : []),
          `LOG_LEVEL=${cfg.service.logLevel}`,
        ],
        mounts: [{ type: 'bind', source: `${cfg.secretsDir}/service`, target: serviceSecrets, readOnly: true }],
        networksAdvanced: [{ name: network.name, aliases: [serviceAlias] }],
        healthcheck: {
          tests: serviceHealthcheck,
          interval: `${healthcheck.intervalSeconds}s`,
          timeout: `${healthcheck.timeoutSeconds}s`,
          retries: healthcheck.retries,
          startPeriod: `${healthcheck.startPeriodSeconds}s`,
        },
        wait: true,
        waitTimeout: healthWaitSeconds,
        restart: 'unless-stopped',
        memory: cfg.service.memoryMb,
        cpus: cfg.service.cpus,
        readOnly: true,
        tmpfs: { '/tmp': 'rw,noexec,nosuid,size=16m' },
        capabilities: { drops: ['ALL'] },
        securityOpts: ['no-new-privileges:true'],
        stopTimeout: stopGraceSeconds.service,
        destroyGraceSeconds: stopGraceSeconds.service,
        labels: labels('api'),
        ...logs,
      },
      {
        ...onHost,
        deleteBeforeReplace: false,
        dependsOn: [imageOnHost, secretWriter, ...(database ? [database] : []), ...(previous ? [previous] : [])],
        replacementTrigger: readAtStartDigest,
      },
    ),
  );
}

// nginx in front: HTTPS with the configured certificate, HTTP redirected (but for ACME challenges), the
// webhook rate-limited, everything else but the billing API answered 404. The only container that
// publishes ports, so its replacement cannot run beside it: a restart of a second or two.
const nginxConfig = renderNginxConfig({
  domain: cfg.domain,
  httpsListen: '443',
  httpListen: '80',
  httpsPublicPort: cfg.httpsPort,
  tlsCertificatePath: '/etc/nginx/tls/tls.crt',
  tlsKeyPath: '/etc/nginx/tls/tls.key',
  acmeWebroot: containerAcmeWebroot,
  upstream: `${serviceAlias}:${servicePort}`,
  resolver: '127.0.0.11', // Docker's embedded DNS on user-defined networks
  resolverValidSeconds,
  maxBodyBytes: cfg.service.maxBodyBytes,
  webhookRatePerSecond: cfg.nginx.webhookRatePerSecond,
  webhookBurst: cfg.nginx.webhookBurst,
  runtimeDir: containerRuntimeDir,
  errorLog: '/dev/stderr',
  accessLog: '/dev/stdout',
  workerProcesses: 'auto',
  workerUser: 'nginx',
});
const nginxImage = new docker.RemoteImage('nginx-image', { name: cfg.nginx.image, platform: cfg.platform, keepLocally: true }, onHost);
const nginx = new docker.Container(
  'nginx',
  {
    name: `${cfg.namePrefix}-nginx`,
    image: nginxImage.imageId,
    ports: [
      { internal: 443, external: cfg.httpsPort },
      { internal: 80, external: cfg.httpPort },
    ],
    networksAdvanced: [{ name: network.name }],
    // certbot writes challenges into the host folder (`volumes`, unlike `mounts`, creates it when missing).
    volumes: [{ hostPath: cfg.acmeWebrootDir, containerPath: containerAcmeWebroot, readOnly: true }],
    uploads: [
      { file: '/etc/nginx/nginx.conf', content: nginxConfig, permissions: '0444' },
      { file: '/etc/nginx/tls/tls.crt', content: cfg.tls.certificate, permissions: '0444' },
      { file: '/etc/nginx/tls/tls.key', content: cfg.tls.key, permissions: '0400' },
    ],
    restart: 'unless-stopped',
    memory: 256,
    stopTimeout: stopGraceSeconds.nginx,
    destroyGraceSeconds: stopGraceSeconds.nginx,
    labels: labels('nginx'),
    ...logs,
  },
  { ...onHost, deleteBeforeReplace: true, dependsOn: replicas },
);

// The Stripe webhook endpoint, registered for exactly the event types the service handles, at the API
// version the service reads, once its URL is served: nginx up and every replica healthy.
const endpoint = new StripeWebhookEndpoint(
  'stripe-webhook-endpoint',
  {
    apiBase: cfg.stripe.apiBase,
    apiKey: cfg.stripe.apiKey,
    mode: cfg.mode,
    url: cfg.webhookUrl,
    enabledEvents: [...HANDLED_EVENT_TYPES],
    apiVersion: stripeApiVersion,
    description: `stripe-credits (${cfg.stack} stack): credit purchases and subscriptions`,
    metadata: { project: pulumi.getProject(), stack: cfg.stack, managed_by: 'pulumi' },
    disabled: cfg.stripe.endpointDisabled,
    adoptId: cfg.stripe.endpointId,
    suppliedSecret: cfg.stripe.suppliedWebhookSecret,
  },
  // Live: deleting or replacing the endpoint would stop every delivery; Pulumi refuses to, until unprotected.
  { dependsOn: [nginx, ...replicas], protect: cfg.mode === 'live' },
);
pulumi.all([endpoint.id, endpoint.suppliedSecretFor, endpoint.signingSecrets]).apply(([id, suppliedFor, secrets]) => {
  if (secrets.length > 1 && suppliedFor !== id) {
    pulumi.log.warn(
      `stripeWebhookSecret was given for an endpoint before ${id}; it stays in the secret file beside ${id}'s own secret ` +
        'for the deliveries that endpoint still makes. Once it is gone: pulumi config set --secret stripeWebhookSecret "" && pulumi up',
    );
  }
});

// The endpoint's signing secrets, written into the file the replicas watch: they reload it, nothing restarts.
const webhookSecretWriter = fileWriter(
  'webhook-secret-file',
  [{ ...webhookSecretFile, value: pulumi.secret(endpoint.signingSecrets.apply((secrets) => secrets.join('\n'))) }],
  { cleanUp: false },
  [endpoint, secretWriter],
);

// What the stack reports: where Stripe delivers, which endpoint, and a fingerprint (never the secret),
// once the secret file holds it, to compare with the fingerprint the service logs when it loads the file.
export const webhookUrl = endpoint.url;
export const webhookEndpointId = endpoint.id;
export const mode = cfg.mode;
export const webhookSecretFingerprint = pulumi.unsecret(
  pulumi.all([pulumi.secret(endpoint.secret), webhookSecretWriter.id]).apply(([secret]) => fingerprintSecret(secret)),
);
export const serviceContainers = replicas.map((replica) => replica.name);
export const nginxContainer = nginx.name;
