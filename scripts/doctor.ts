/** Checks a deployment or a local run from the public URL down to the database, and says how to fix each problem: see `usage`. */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { ConfigError, readSecretValue, type StripeMode } from '../service/config';
import { describeError } from '../service/db';
import { devWebhookSecretPath } from '../service/devSecret';
import { webhookPath } from '../service/webhook/route';
import { parseCommandLine, parseDurationSeconds } from './lib/cli';
import { runCommand } from './doctor/commandRunner';
import { checkDatabase } from './doctor/databaseChecks';
import { checkNginxConfig, checkWebhookUrl, type NginxTarget } from './doctor/edgeChecks';
import { doctorExitCodes, exitCodeFor, formatChecklist, formatJson, skipped, type CheckResult } from './doctor/report';
import { checkSecretFile, checkServiceSecrets, type SecretFileTarget, type ServiceTarget } from './doctor/secretChecks';
import { readStackOutputsFile, readStackOutputsFromPulumi, type StackOutputs } from './doctor/stackOutputs';
import { checkStripe } from './doctor/stripeChecks';

const usage = `
Usage: npm run doctor -- [--stack test|live | --stack-outputs FILE] [--service-url URL]… [--user ID] [--json]

Checks that Stripe's deliveries can reach the service and be applied, and prints a fix for each problem:
  Edge      the public webhook URL answers 400 to an unsigned POST, over HTTPS with a certificate Node
            trusts; nginx -t passes (in the stack's nginx container, or on --nginx-config FILE)
  Stripe    the key is of the stack's mode; the endpoint exists in that mode, is enabled, and sends the
            handled event types at the pinned API version to the public URL; no recent event of those
            types still waits for delivery (how a wrong secret or a dead URL shows from Stripe's side)
  Secret    the secret file exists, parses, and only its owner may read it; each running service has
            loaded the fingerprint the deployment recorded for the endpoint, and what the file holds
  Database  reachable and migrated; recent events by outcome; failed and unmatched events, each with the
            command that re-applies it
  --user    that user's credits (the old guide's SQL query) and latest ledger entries
It changes nothing. Checks it cannot run for lack of a setting are shown as skipped, with what to give.

Settings, read like the service reads them; secrets from files only (never printed: fingerprints only):
  STRIPE_API_KEY_FILE         a key of the stack's mode with read access to Webhook Endpoints and Events
  STRIPE_API_BASE             default https://api.stripe.com (a local Stripe's URL for a local run)
  STRIPE_MODE                 test or live, when no stack says it (default test)
  STRIPE_WEBHOOK_SECRET_FILE  the service's secret file (default: a stack's, read inside its first replica;
                              a local run's development one, DATA_DIR/webhook-secret)
  DATABASE_URL_FILE           or DATABASE_URL without a password; DATABASE_PASSWORD_FILE as the service

Options:
  --stack NAME             a deployed stack: its outputs from \`pulumi stack output --json --stack NAME\`
  --stack-outputs FILE     the same outputs saved to a file (mode, webhookUrl, webhookEndpointId,
                           webhookSecretFingerprint, nginxContainer, serviceContainers)
  --service-url URL        a running service on its own port (repeat for each replica); default without
                           a stack: http://127.0.0.1:$PORT (3000); with a stack: docker exec into each of
                           its serviceContainers
  --webhook-url URL        the public webhook URL (default: the stack's webhookUrl, else the first
                           service URL + ${webhookPath})
  --endpoint-id we_…       the Stripe endpoint (default: the stack's webhookEndpointId, else the endpoint
                           whose URL is the webhook URL)
  --mode test|live         the Stripe mode to expect (default: the stack's, else STRIPE_MODE, else test)
  --ca-file FILE           also trust this CA's certificates for the webhook URL (a test certificate)
  --nginx-container NAME   run nginx -t in this container (default: the stack's nginxContainer)
  --nginx-config FILE      run nginx -t on this file here instead (with --nginx-command, default nginx)
  --docker-command PATH    the docker client to use (default docker); --docker-host ssh://user@host
  --pulumi-command PATH    the pulumi CLI to use (default pulumi)
  --pending-after DURATION a delivery pending longer than this is a problem (default 5m)
  --since DURATION         how far back events are read (default 24h; Stripe keeps 30 days)
  --user ID                also show this user's credits and ledger
  --json                   one JSON object on stdout instead of the checklist
  -h, --help               show this text

Exit codes: 0 every check passed, 1 problems found (each with its fix), 2 usage error, 78 settings the
doctor cannot use (a secret given as a value, an unreadable file, no stack outputs), 70 a bug.

Examples:
  STRIPE_API_KEY_FILE=secrets/test/stripe_api_key npm run doctor -- --stack test --docker-host ssh://deploy@docker-test.example.com
  DATABASE_URL=postgres://postgres@127.0.0.1:41234/postgres STRIPE_API_BASE=http://127.0.0.1:41873 \\
    STRIPE_API_KEY_FILE=key.txt npm run doctor -- --user alice        # next to npm start (its log gives both URLs)
`;

/** The command that re-applies one event (the replay script of issue 13). */
export const replayCommand = (eventId: string) => `npm run replay-events -- --event ${eventId}`;

const maxSinceSeconds = 30 * 24 * 3600;

interface Settings {
  json: boolean;
  mode: StripeMode;
  stack?: StackOutputs;
  serviceTargets: ServiceTarget[];
  webhookUrl?: URL;
  endpointId?: string;
  extraCa?: string;
  extraCaFile?: string;
  nginx?: NginxTarget;
  apiKey?: string;
  apiBase: URL;
  secretFileTarget?: SecretFileTarget;
  databaseUrl?: string;
  databasePasswordFile?: string;
  pendingAfterSeconds: number;
  sinceSeconds: number;
  user?: string;
}

/** A secret the doctor would have to hold in its environment: refused, it takes the file form only. */
function refuseSecretValue(env: NodeJS.ProcessEnv, name: string): void {
  if (env[name]?.trim()) throw new ConfigError(`${name} is set as a value: the doctor takes secrets from files only. Put it into a file (mode 0600) and set ${name}_FILE instead.`);
}

function urlPassword(raw: string): string {
  try {
    return new URL(raw).password;
  } catch {
    throw new ConfigError('DATABASE_URL must be a postgres:// URL.');
  }
}

async function readSettings(argv?: string[], env: NodeJS.ProcessEnv = process.env): Promise<Settings> {
  const cli = parseCommandLine({
    usage,
    args: argv,
    options: {
      stack: { type: 'string' },
      'stack-outputs': { type: 'string' },
      'service-url': { type: 'string', multiple: true },
      'webhook-url': { type: 'string' },
      'endpoint-id': { type: 'string' },
      mode: { type: 'string' },
      'ca-file': { type: 'string' },
      'nginx-container': { type: 'string' },
      'nginx-config': { type: 'string' },
      'nginx-command': { type: 'string' },
      'docker-command': { type: 'string', default: 'docker' },
      'docker-host': { type: 'string' },
      'pulumi-command': { type: 'string', default: 'pulumi' },
      'pending-after': { type: 'string', default: '5m' },
      since: { type: 'string', default: '24h' },
      user: { type: 'string' },
      json: { type: 'boolean', default: false },
    },
  });
  const { values } = cli;
  if (values.stack && values['stack-outputs']) cli.fail('give --stack or --stack-outputs, not both');
  if (values['nginx-container'] && values['nginx-config']) cli.fail('give --nginx-container or --nginx-config, not both');
  if (values.mode !== undefined && values.mode !== 'test' && values.mode !== 'live') cli.fail(`--mode must be test or live, got "${values.mode}"`);
  const pendingAfterSeconds = parseDurationSeconds(values['pending-after']) ?? cli.fail(`--pending-after must look like 90s, 5m or 1h, got "${values['pending-after']}"`);
  const sinceSeconds = parseDurationSeconds(values.since) ?? cli.fail(`--since must look like 6h or 3d, got "${values.since}"`);
  if (sinceSeconds < 1 || sinceSeconds > maxSinceSeconds) cli.fail('--since must be between 1s and 30d (Stripe lists 30 days of events)');
  if (pendingAfterSeconds >= sinceSeconds) cli.fail('--pending-after must be shorter than --since');
  const parseUrl = (flag: string, raw: string): URL => {
    try {
      const url = new URL(raw);
      if (!/^https?:$/.test(url.protocol)) throw new Error('not http(s)');
      return url;
    } catch {
      return cli.fail(`${flag} must be an http(s) URL, got "${raw}"`);
    }
  };
  const serviceUrls = (values['service-url'] ?? []).map((raw) => parseUrl('--service-url', raw));
  const explicitWebhookUrl = values['webhook-url'] === undefined ? undefined : parseUrl('--webhook-url', values['webhook-url']);

  refuseSecretValue(env, 'STRIPE_API_KEY');
  refuseSecretValue(env, 'STRIPE_WEBHOOK_SECRET');
  if (env.DATABASE_URL?.trim() && env.DATABASE_URL_FILE?.trim()) throw new ConfigError('Both DATABASE_URL and DATABASE_URL_FILE are set; keep only one of them.');
  if (env.DATABASE_URL?.trim() && urlPassword(env.DATABASE_URL.trim())) {
    throw new ConfigError('DATABASE_URL holds a password: the doctor takes secrets from files only. Set DATABASE_URL_FILE (the whole URL in a file), or DATABASE_PASSWORD_FILE beside a URL without it.');
  }
  const databaseUrl = readSecretValue(env, 'DATABASE_URL');
  if (databaseUrl !== undefined && !/^postgres(ql)?:\/\//.test(databaseUrl)) throw new ConfigError('DATABASE_URL (or the file named by DATABASE_URL_FILE) must be a postgres:// URL.');
  const databasePasswordFile = env.DATABASE_PASSWORD_FILE?.trim() || undefined;
  if (databasePasswordFile) readSecretValue({ DATABASE_PASSWORD_FILE: databasePasswordFile }, 'DATABASE_PASSWORD');
  const apiKey = readSecretValue(env, 'STRIPE_API_KEY');
  const envMode = env.STRIPE_MODE?.trim() || undefined;
  if (envMode !== undefined && envMode !== 'test' && envMode !== 'live') throw new ConfigError(`STRIPE_MODE must be "test" or "live", got "${envMode}".`);
  let apiBase: URL;
  try {
    apiBase = new URL(env.STRIPE_API_BASE?.trim() || 'https://api.stripe.com');
  } catch {
    throw new ConfigError(`STRIPE_API_BASE must be an absolute URL, got "${env.STRIPE_API_BASE}".`);
  }

  const stack = values['stack-outputs']
    ? await readStackOutputsFile(values['stack-outputs'])
    : values.stack
      ? await readStackOutputsFromPulumi(values.stack, runCommand, values['pulumi-command'])
      : undefined;
  const dockerCommand = values['docker-command'];
  const dockerHost = values['docker-host'];

  const serviceTargets: ServiceTarget[] =
    serviceUrls.length > 0
      ? serviceUrls.map((url) => ({ kind: 'url', url: url.origin }))
      : stack
        ? (stack.serviceContainers ?? []).map((container) => ({ kind: 'container', container, dockerCommand, dockerHost }))
        : [{ kind: 'url', url: `http://127.0.0.1:${env.PORT?.trim() || 3000}` }];
  const firstUrl = serviceTargets.find((target) => target.kind === 'url');
  const webhookUrl = explicitWebhookUrl ?? (stack?.webhookUrl ? new URL(stack.webhookUrl) : firstUrl ? new URL(webhookPath, firstUrl.url) : undefined);

  const nginxContainer = values['nginx-container'] ?? (values['nginx-config'] ? undefined : stack?.nginxContainer);
  const nginx: NginxTarget | undefined = values['nginx-config']
    ? { kind: 'file', configFile: values['nginx-config'], nginxCommand: values['nginx-command'] ?? (existsSync('/usr/sbin/nginx') ? '/usr/sbin/nginx' : 'nginx') }
    : nginxContainer
      ? { kind: 'container', container: nginxContainer, dockerCommand, dockerHost }
      : undefined;

  let extraCa: string | undefined;
  if (values['ca-file']) {
    try {
      extraCa = await readFile(values['ca-file'], 'utf8');
    } catch (error) {
      throw new ConfigError(`--ca-file ${values['ca-file']} cannot be read (${(error as NodeJS.ErrnoException).code ?? 'error'}).`);
    }
  }

  // The file named here; else a stack's, inside its first replica; else a local run's development secret.
  const developmentSecret = devWebhookSecretPath(path.resolve(env.DATA_DIR?.trim() || '.data'));
  const namedFile = env.STRIPE_WEBHOOK_SECRET_FILE?.trim();
  const firstContainer = stack?.serviceContainers?.[0];
  const secretFileTarget: SecretFileTarget | undefined = namedFile
    ? { kind: 'file', path: path.resolve(namedFile) }
    : firstContainer
      ? { kind: 'container', container: firstContainer, dockerCommand, dockerHost }
      : !stack && existsSync(developmentSecret)
        ? { kind: 'file', path: developmentSecret }
        : undefined;

  return {
    json: values.json,
    mode: (values.mode as StripeMode | undefined) ?? stack?.mode ?? envMode ?? 'test',
    stack,
    serviceTargets,
    webhookUrl,
    endpointId: values['endpoint-id'] ?? stack?.webhookEndpointId,
    extraCa,
    extraCaFile: values['ca-file'],
    nginx,
    apiKey,
    apiBase,
    secretFileTarget,
    databaseUrl,
    databasePasswordFile,
    pendingAfterSeconds,
    sinceSeconds,
    user: values.user,
  };
}

async function runChecks(settings: Settings): Promise<CheckResult[]> {
  const nowMillis = Date.now();
  const edge = async () => [
    ...(settings.webhookUrl
      ? await checkWebhookUrl({ url: settings.webhookUrl, extraCa: settings.extraCa, extraCaFile: settings.extraCaFile, nowMillis })
      : [skipped('edge', 'webhook-url', 'the public webhook URL answers 400 to an unsigned POST', 'no URL known: give --webhook-url or --stack')]),
    await checkNginxConfig(settings.nginx, runCommand),
  ];
  const stripe = async () =>
    settings.apiKey
      ? checkStripe({
          apiKey: settings.apiKey,
          apiBase: settings.apiBase,
          mode: settings.mode,
          webhookUrl: settings.webhookUrl?.href,
          endpointId: settings.endpointId,
          pendingAfterSeconds: settings.pendingAfterSeconds,
          sinceSeconds: settings.sinceSeconds,
          nowMillis,
          replayCommand,
        })
      : [skipped('stripe', 'endpoint-found', 'the webhook endpoint exists in Stripe', 'no key: set STRIPE_API_KEY_FILE (and STRIPE_API_BASE for a local Stripe)')];
  const secrets = async () => {
    const file = await checkSecretFile(settings.secretFileTarget, runCommand);
    const services = await checkServiceSecrets({
      targets: settings.serviceTargets,
      expectedFingerprint: settings.stack?.webhookSecretFingerprint,
      endpointId: settings.endpointId,
      secretFile: settings.secretFileTarget?.kind === 'file' ? settings.secretFileTarget.path : 'the secret file',
      fileFingerprints: file.fingerprints,
      run: runCommand,
    });
    return [file.result, ...services];
  };
  const database = async () =>
    settings.databaseUrl
      ? checkDatabase({ connectionString: settings.databaseUrl, passwordFile: settings.databasePasswordFile, sinceSeconds: settings.sinceSeconds, user: settings.user, replayCommand })
      : [
          skipped('database', 'database-reachable', 'the database is reachable', 'no database: set DATABASE_URL_FILE (or DATABASE_URL without a password)'),
          ...(settings.user ? [skipped('user', 'user-balance', `the credits of user ${settings.user}`, 'no database')] : []),
        ];
  // Independent of each other: asked at the same time, reported in a fixed order.
  return (await Promise.all([edge(), stripe(), secrets(), database()])).flat();
}

async function main(): Promise<number> {
  const settings = await readSettings();
  const results = await runChecks(settings);
  if (results.every((result) => result.status === 'skipped')) {
    throw new ConfigError('nothing could be checked: give a stack (--stack or --stack-outputs), or the settings of a local run (--service-url, STRIPE_API_KEY_FILE, DATABASE_URL…); see --help.');
  }
  const heading = {
    mode: settings.mode,
    webhook_url: settings.webhookUrl?.href ?? null,
    endpoint_id: settings.endpointId ?? null,
  };
  process.stdout.write(
    settings.json
      ? formatJson(heading, results)
      : formatChecklist(`doctor: ${settings.mode} mode, webhook ${settings.webhookUrl?.href ?? '(unknown)'}${settings.endpointId ? `, endpoint ${settings.endpointId}` : ''}`, results),
  );
  return exitCodeFor(results);
}

if (require.main === module) {
  main().then(
    (code) => process.exit(code),
    (error: unknown) => {
      if (error instanceof ConfigError) {
        console.error(`Configuration error: ${error.message}`);
        process.exit(doctorExitCodes.configuration);
      }
      console.error(`doctor failed: ${describeError(error).message} (unexpected; please report it)`);
      process.exit(doctorExitCodes.unexpected);
    },
  );
}
