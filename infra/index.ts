/**
 * The deployment, per stack (test or live): from a Docker host and Stripe keys to a working HTTPS,
 * rate-limited webhook. Read top to bottom: configuration, then each resource in the order it comes
 * up, then what the stack reports.
 */
import { createHash } from 'node:crypto';
import path from 'node:path';
import * as docker from '@pulumi/docker';
import * as pulumi from '@pulumi/pulumi';
import { shutdownGraceMillis } from '../service/main';
import { stripeApiVersion } from '../service/stripeApi';
import { HANDLED_EVENT_TYPES } from '../service/webhook/handledEventTypes';
import { fingerprintSecret } from '../service/webhook/secretFingerprint';
import { loadDeployConfig, projectRoot } from './config';
import { containerAcmeWebroot, containerRuntimeDir, renderNginxConfig } from './nginxConfig';
import { secretMountPaths, secretWriterUploads, serviceUid, writerPaths, type SecretFile } from './secretFiles';
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
/**
 * How long Docker waits after the stop signal before it kills, when a container is replaced or removed
 * (`destroyGraceSeconds`; unset, the provider kills at once) and when it is stopped (`stopTimeout`).
 * PostgreSQL shuts down with a checkpoint; a replica finishes its in-flight requests first.
 */
export const stopGraceSeconds = {
  postgres: 90,
  service: Math.ceil(shutdownGraceMillis / 1000) + 5,
  nginx: 10,
};

// The Docker host everything runs on: the local socket, or ssh://user@host for a remote one.
const dockerHost = new docker.Provider('docker-host', { host: cfg.dockerHost });
const onHost = { provider: dockerHost };

// The Stripe webhook endpoint, registered for exactly the event types the service handles, at the
// API version the service reads. Its signing secret is a Pulumi secret from here on.
const endpoint = new StripeWebhookEndpoint('stripe-webhook-endpoint', {
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
});
const webhookSecret = pulumi.secret(endpoint.secret);

// A private network: PostgreSQL and the replicas are reachable only through it, nginx is the only door.
const network = new docker.Network('private-network', { name: `${cfg.namePrefix}-private`, labels: labels('network') }, onHost);

// The service image, built from the Dockerfile on the Docker host and never pushed anywhere.
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

// The database the service uses: a URL of the stack's own PostgreSQL container, or the external one.
const databaseUrl =
  cfg.database.kind === 'external'
    ? cfg.database.url
    : pulumi.secret(
        cfg.database.password.apply((password) => `postgres://stripe_credits:${encodeURIComponent(password)}@${postgresAlias}:5432/stripe_credits`),
      );

// The secret files, installed on the host by a one-shot container; rerun (replaced) whenever a value changes.
const secretFiles: SecretFile[] = [
  { reader: 'service', name: 'stripe_webhook_secret', value: webhookSecret },
  { reader: 'service', name: 'stripe_api_key', value: cfg.stripe.apiKey },
  { reader: 'service', name: 'database_url', value: databaseUrl },
  ...(cfg.service.authJwtSecret ? [{ reader: 'service' as const, name: 'auth_jwt_secret', value: cfg.service.authJwtSecret }] : []),
  ...(cfg.database.kind === 'container' ? [{ reader: 'postgres' as const, name: 'postgres_password', value: cfg.database.password }] : []),
  // Not a secret, but delivered the same way: the replicas' root filesystem is read-only, so Docker cannot upload into it.
  ...(cfg.service.creditCatalog ? [{ reader: 'service' as const, name: 'credit_catalog', value: cfg.service.creditCatalog }] : []),
];
const secretWriter = new docker.Container(
  'secret-files',
  {
    name: `${cfg.namePrefix}-secret-files`,
    image: image.repoDigest,
    user: '0:0',
    entrypoints: ['/bin/sh', writerPaths.script],
    networkMode: 'none',
    volumes: [{ hostPath: cfg.secretsDir, containerPath: writerPaths.target }],
    uploads: secretWriterUploads(secretFiles),
    attach: true,
    mustRun: false,
    restart: 'no',
    labels: labels('secret-files'),
    ...logs,
  },
  { ...onHost, deleteBeforeReplace: true },
);
// A failed install fails the deployment (the replicas would not start without their files anyway).
secretWriter.exitCode.apply((code) => {
  if (typeof code === 'number' && code !== 0) {
    throw new Error(`Installing the secret files on the Docker host failed (exit ${code}): see docker logs ${cfg.namePrefix}-secret-files`);
  }
});

// PostgreSQL with a persistent volume (kept when the stack is destroyed), password from its secret file, no host port.
let database: docker.Container | undefined;
if (cfg.database.kind === 'container') {
  const dataVolume = new docker.Volume('postgres-data', { name: `${cfg.namePrefix}-pgdata`, labels: labels('postgres') }, { ...onHost, retainOnDelete: true });
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
}

// The service replicas: non-root, read-only, resource-limited, health-checked; secrets and the catalog
// only as files in a read-only directory mount. Files the service reads once at start replace them when they change.
const serviceSecrets = secretMountPaths.service;
const readAtStartDigest = pulumi.secret(
  pulumi
    .all([cfg.stripe.apiKey, databaseUrl, cfg.service.authJwtSecret ?? '', cfg.service.creditCatalog ?? ''])
    .apply((values) => createHash('sha256').update(values.join('\n')).digest('hex')),
);
const replicas = Array.from({ length: cfg.replicas }, (_, index) => {
  const name = `${cfg.namePrefix}-api-${index}`;
  return new docker.Container(
    `api-${index}`,
    {
      name,
      image: image.repoDigest,
      user: `${serviceUid}:${serviceUid}`,
      envs: [
        'NODE_ENV=production',
        'HOST=0.0.0.0',
        `PORT=${servicePort}`,
        `STRIPE_MODE=${cfg.mode}`,
        `STRIPE_API_BASE=${cfg.stripe.apiBase}`,
        `STRIPE_WEBHOOK_SECRET_FILE=${serviceSecrets}/stripe_webhook_secret`,
        `STRIPE_API_KEY_FILE=${serviceSecrets}/stripe_api_key`,
        `DATABASE_URL_FILE=${serviceSecrets}/database_url`,
        ...(cfg.service.authJwtSecret ? [`AUTH_JWT_SECRET_FILE=${serviceSecrets}/auth_jwt_secret`] : []),
        ...(cfg.service.creditCatalog ? [`CREDIT_CATALOG_FILE=${serviceSecrets}/credit_catalog`] : []),
        `WEBHOOK_MAX_BODY_BYTES=${cfg.service.maxBodyBytes}`,
        `LOG_LEVEL=${cfg.service.logLevel}`,
      ],
      mounts: [{ type: 'bind', source: `${cfg.secretsDir}/service`, target: serviceSecrets, readOnly: true }],
      networksAdvanced: [{ name: network.name, aliases: [serviceAlias] }],
      healthcheck: { tests: serviceHealthcheck, interval: '10s', timeout: '3s', retries: 3, startPeriod: '20s' },
      wait: true,
      waitTimeout: 120,
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
      deleteBeforeReplace: true,
      dependsOn: database ? [secretWriter, database] : [secretWriter],
      replacementTrigger: readAtStartDigest,
    },
  );
});

// nginx in front: HTTPS with the configured certificate, HTTP redirected, the webhook rate-limited,
// everything else but the billing API answered 404. The only container that publishes ports.
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

// What the stack reports: where Stripe delivers, which endpoint, and a fingerprint (never the secret)
// to compare with the fingerprint the service logs when it loads the secret file.
export const webhookUrl = endpoint.url;
export const webhookEndpointId = endpoint.id;
export const mode = cfg.mode;
export const webhookSecretFingerprint = pulumi.unsecret(webhookSecret.apply(fingerprintSecret));
export const serviceContainers = replicas.map((replica) => replica.name);
export const nginxContainer = nginx.name;
