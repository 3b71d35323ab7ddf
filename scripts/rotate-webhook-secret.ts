/** Rotates the webhook signing secret without rejecting a delivery: see `usage`. */
import { ConfigError } from '../service/config';
import { describeError } from '../service/db';
import { fingerprintSecret } from '../service/webhook/secretFingerprint';
import { parseCommandLine, parseDurationSeconds } from './lib/cli';
import { askReplicas, checkQuiet, hasLoaded, verifiedWith, type ReplicaReport } from './rotation/replicas';
import { readRotationState, stateFileOf, writeRotationState, type RotationState } from './rotation/rotationState';
import { chooseSecretsFile, readSecretsFile, writeSecretsFile } from './rotation/secretsFile';
import { openStripeEndpoints, type StripeEndpoints } from './rotation/stripeEndpoints';

const usage = `
Usage: npm run rotate-webhook-secret -- [--secrets-file FILE] [--service-url URL]… < new-secret
       npm run rotate-webhook-secret -- --finish [--secrets-file FILE] [--service-url URL]…
       npm run rotate-webhook-secret -- --replace-endpoint we_… [--secrets-file FILE] [--service-url URL]…
       npm run rotate-webhook-secret -- --status
       (in the container: node dist/scripts/rotate-webhook-secret.js …)

Changes the Stripe webhook signing secret while deliveries flow, rejecting none. Every replica must read
the secrets file (STRIPE_WEBHOOK_SECRET_FILE) and be reachable on its service port (GET /webhook-secrets).

Dashboard roll (Stripe signs every delivery with the old and the new secret until the old one expires):
  1. Roll the secret in the Dashboard (Developers → Webhooks → the endpoint → Roll secret), copy the new one.
  2. Give it on stdin: it is added beside the old one (atomic rename, owner and mode kept); the script waits
     until every replica has loaded it and records the rotation in FILE.rotation.json.
  3. --finish retires the old secret once no replica has verified a delivery with it for --quiet-for, or once
     the overlap (--expires-in, what you chose in the Dashboard) is over; until then it refuses, exit 75.

Endpoint replacement (no Dashboard: a new endpoint gets a new secret), one run with --replace-endpoint:
  creates an endpoint with the old one's URL, events and API version; adds its secret beside the old one;
  waits until every replica has loaded it and a delivery has verified with it; deletes the old endpoint;
  waits --quiet-for without deliveries signed by the old secret; retires it. Events both endpoints deliver
  meanwhile are applied once (same event id). Needs a Stripe key that may write webhook endpoints in
  STRIPE_API_KEY_FILE (or STRIPE_API_KEY); STRIPE_API_BASE if not Stripe itself. Run again to resume.

Options:
  --secrets-file FILE   the secrets file (default $STRIPE_WEBHOOK_SECRET_FILE, else the development
                        secret of npm start in \${DATA_DIR:-.data}/webhook-secret)
  --service-url URL     a replica's service port, repeat for each (default http://127.0.0.1:3000)
  --expires-in 24h      how long Stripe keeps signing with the old secret (Dashboard roll; default 24h)
  --quiet-for 10m       how long no delivery may have verified with the old secret before it goes (default 10m)
  --wait-timeout 5m     how long to wait for the replicas (or a delivery) before giving up, exit 75 (default 5m)
  --finish              retire the old secret of the Dashboard roll in progress
  --replace-endpoint ID replace this endpoint (we_…) through the Stripe API
  --status              show the secrets in force, the replicas' view and the rotation in progress
  --dry-run             say what would be done, change nothing
  --json                print the result as one JSON object on stdout (messages stay on stderr)
  -h, --help            show this text

Exit codes: 0 done; 1 failed (message says why); 2 usage; 75 not yet (replicas not ready, old secret
still in use): run the same command again later. Secrets are read from stdin or files, never printed:
only their fingerprints (the service's sha256 prefix).

Example: npm run rotate-webhook-secret -- --service-url http://10.0.0.5:3000 --service-url http://10.0.0.6:3000 < new-secret
`;

const exitCodes = { done: 0, failed: 1, notYet: 75 } as const;
const pollMillis = 200;

class NotYet extends Error {}

interface Settings {
  secretsFile: string;
  serviceUrls: string[];
  expiresInMillis: number;
  quietForMillis: number;
  waitTimeoutMillis: number;
  dryRun: boolean;
  json: boolean;
}

/** Messages for the operator: on stderr, so that --json keeps stdout to one object. */
const say = (message: string) => process.stderr.write(`${message}\n`);
const sleep = (millis: number) => new Promise((resolve) => setTimeout(resolve, millis));
const iso = (millis: number) => new Date(millis).toISOString();

function durationMillis(cli: { fail(message: string): never }, flag: string, raw: string): number {
  const seconds = parseDurationSeconds(raw);
  if (seconds === undefined) return cli.fail(`${flag} must look like 30s, 10m, 24h or 2d, got "${raw}"`);
  return seconds * 1000;
}

async function readNewSecret(): Promise<string> {
  if (process.stdin.isTTY) say('New webhook signing secret (whsec_…), then Enter and Ctrl-D:');
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  const lines = Buffer.concat(chunks).toString('utf8').split('\n').map((line) => line.trim()).filter(Boolean);
  if (lines.length !== 1 || !/^whsec_\w+$/.test(lines[0]!)) {
    // Never echo what was given: it may be a secret of another kind.
    throw new Error('stdin must hold one webhook signing secret, "whsec_" followed by letters and digits (copy it from the Stripe endpoint)');
  }
  return lines[0]!;
}

/** Polls the replicas until `ready` holds for every one, or throws NotYet naming those that are not. */
async function waitForReplicas(settings: Settings, what: string, ready: (report: ReplicaReport) => boolean, timeoutMillis = settings.waitTimeoutMillis): Promise<ReplicaReport[]> {
  const deadline = Date.now() + timeoutMillis;
  for (;;) {
    const reports = await askReplicas(settings.serviceUrls);
    const waiting = reports.filter((report) => !ready(report));
    if (waiting.length === 0) return reports;
    if (Date.now() > deadline) {
      throw new NotYet(`after ${Math.round(timeoutMillis / 1000)} s, not every replica ${what}: ${waiting.map((report) => report.problem ?? report.url).join('; ')}`);
    }
    await sleep(pollMillis);
  }
}

/** The secrets file with `secret` last (newest), unless it is there already. */
async function addSecret(settings: Settings, secret: string): Promise<{ added: boolean; before: string[] }> {
  const secrets = await readSecretsFile(settings.secretsFile);
  const before = secrets.map((entry) => entry.fingerprint);
  if (secrets.some((entry) => entry.value === secret)) return { added: false, before };
  if (!settings.dryRun) await writeSecretsFile(settings.secretsFile, [...secrets.map((entry) => entry.value), secret]);
  return { added: true, before };
}

async function retireSecrets(settings: Settings, fingerprints: readonly string[]): Promise<string[]> {
  const secrets = await readSecretsFile(settings.secretsFile);
  const kept = secrets.filter((entry) => !fingerprints.includes(entry.fingerprint));
  if (kept.length === 0) throw new Error('refusing to retire every secret in the file: the new one is missing (was the file replaced meanwhile?)');
  if (!settings.dryRun && kept.length !== secrets.length) await writeSecretsFile(settings.secretsFile, kept.map((entry) => entry.value));
  return kept.map((entry) => entry.fingerprint);
}

async function waitForNewSecretLoaded(settings: Settings, state: RotationState): Promise<RotationState> {
  say(`waiting until every replica (${settings.serviceUrls.join(', ')}) has loaded ${state.new_fingerprint}…`);
  await waitForReplicas(settings, `has loaded ${state.new_fingerprint} (check that it reads ${settings.secretsFile}, and rerun this command to wait again)`, (report) => hasLoaded(report, state.new_fingerprint));
  const loaded = { ...state, all_loaded_at: state.all_loaded_at ?? new Date().toISOString() };
  await writeRotationState(settings.secretsFile, loaded);
  say(`every replica has loaded ${state.new_fingerprint}`);
  return loaded;
}

async function unfinishedRotation(settings: Settings): Promise<RotationState | undefined> {
  const state = await readRotationState(settings.secretsFile);
  return state && !state.finished_at ? state : undefined;
}

// -- Dashboard roll ----------------------------------------------------------------------------------

async function startDashboardRoll(settings: Settings): Promise<Record<string, unknown>> {
  const secret = await readNewSecret();
  const fingerprint = fingerprintSecret(secret);
  const inProgress = await unfinishedRotation(settings);
  if (inProgress && inProgress.new_fingerprint !== fingerprint) {
    throw new Error(`a rotation to ${inProgress.new_fingerprint} is still in progress (${stateFileOf(settings.secretsFile)}): finish it first (--finish), or remove that file if it was abandoned`);
  }
  const { added, before } = await addSecret(settings, secret);
  const old = before.filter((entry) => entry !== fingerprint);
  if (old.length === 0) throw new Error(`${fingerprint} is the only secret in ${settings.secretsFile}: there is nothing to rotate from`);
  say(`${added ? (settings.dryRun ? 'would add' : 'added') : 'already in the file:'} ${fingerprint} beside ${old.join(', ')}`);
  if (settings.dryRun) return { action: 'dashboard-roll', dry_run: true, new_fingerprint: fingerprint, old_fingerprints: old };

  const nowMillis = Date.now();
  let state: RotationState = inProgress ?? {
    kind: 'dashboard-roll',
    started_at: iso(nowMillis),
    expires_at: iso(nowMillis + settings.expiresInMillis),
    old_fingerprints: old,
    new_fingerprint: fingerprint,
    service_urls: settings.serviceUrls,
    all_loaded_at: null,
    finished_at: null,
  };
  await writeRotationState(settings.secretsFile, state);
  state = await waitForNewSecretLoaded(settings, state);
  say(
    `recorded in ${stateFileOf(settings.secretsFile)}. Next: roll the secret in the Dashboard if you have not yet, then, once no delivery ` +
      `has verified with the old secret for ${settings.quietForMillis / 1000} s (after ${iso(Date.parse(state.all_loaded_at!) + settings.quietForMillis)} at the earliest): ` +
      'npm run rotate-webhook-secret -- --finish (with the same --secrets-file and --service-url)',
  );
  return { action: 'dashboard-roll', new_fingerprint: fingerprint, old_fingerprints: old, expires_at: state.expires_at, state_file: stateFileOf(settings.secretsFile), next_step: 'npm run rotate-webhook-secret -- --finish' };
}

async function finishDashboardRoll(settings: Settings): Promise<Record<string, unknown>> {
  const state = await unfinishedRotation(settings);
  if (!state) throw new Error(`no rotation in progress (${stateFileOf(settings.secretsFile)}): start one by giving the new secret on stdin`);
  if (state.kind !== 'dashboard-roll') throw new Error(`the rotation in progress replaces endpoint ${state.old_endpoint_id}: resume it with --replace-endpoint ${state.old_endpoint_id}`);
  const reports = await askReplicas(settings.serviceUrls);
  const notLoaded = reports.filter((report) => !hasLoaded(report, state.new_fingerprint));
  if (notLoaded.length > 0) {
    throw new NotYet(`not every replica has loaded ${state.new_fingerprint}: ${notLoaded.map((report) => report.problem ?? report.url).join('; ')}. Retiring the old secret now could reject deliveries; check the replicas and run --finish again`);
  }
  const nowMillis = Date.now();
  const sinceMillis = Date.parse(state.all_loaded_at ?? '') || nowMillis;
  const quiet = checkQuiet(reports, state.old_fingerprints, { sinceMillis, quietForMillis: settings.quietForMillis, nowMillis });
  const expired = nowMillis >= Date.parse(state.expires_at);
  if (!quiet.quiet && !expired) {
    throw new NotYet(
      `the old secret may still be needed: ${quiet.reasons.join('; ')}. ` +
        (Number.isFinite(quiet.quietAtMillis) ? `If nothing more arrives with it, run --finish again after ${iso(quiet.quietAtMillis)}. ` : '') +
        `Deliveries signed with the old secret alone mean Stripe does not sign with the new one yet: roll the secret in the Dashboard for this endpoint (the overlap ends ${state.expires_at}).`,
    );
  }
  if (!quiet.quiet) say(`the overlap ended at ${state.expires_at}: Stripe no longer signs with the old secret, retiring it although ${quiet.reasons.join('; ')}`);
  const kept = await retireSecrets(settings, state.old_fingerprints);
  say(`${settings.dryRun ? 'would retire' : 'retired'} ${state.old_fingerprints.join(', ')}; in force: ${kept.join(', ')}`);
  if (settings.dryRun) return { action: 'finish', dry_run: true, retired: state.old_fingerprints, in_force: kept };
  await writeRotationState(settings.secretsFile, { ...state, finished_at: new Date().toISOString() });
  await waitForReplicas(settings, `has dropped ${state.old_fingerprints.join(', ')}`, (report) => state.old_fingerprints.every((fingerprint) => !hasLoaded(report, fingerprint)));
  return { action: 'finish', retired: state.old_fingerprints, in_force: kept, because: quiet.quiet ? 'quiet' : 'overlap expired' };
}

// -- Endpoint replacement ----------------------------------------------------------------------------

async function replaceEndpoint(settings: Settings, oldEndpointId: string, stripe: StripeEndpoints): Promise<Record<string, unknown>> {
  const inProgress = await unfinishedRotation(settings);
  if (inProgress && inProgress.old_endpoint_id !== oldEndpointId) {
    throw new Error(`another rotation is in progress (${stateFileOf(settings.secretsFile)}): finish it first, or remove that file if it was abandoned`);
  }
  const reached = inProgress?.old_endpoint_deleted_at ? { state: inProgress } : await replaceUpToDeletion(settings, oldEndpointId, stripe, inProgress);
  if ('dryRun' in reached) return reached.dryRun;
  const { state } = reached;

  const sinceMillis = Date.parse(state.old_endpoint_deleted_at!);
  const oldFingerprints = state.old_fingerprints;
  await waitUntil(
    settings,
    async () => checkQuiet(await askReplicas(settings.serviceUrls), oldFingerprints, { sinceMillis, quietForMillis: settings.quietForMillis, nowMillis: Date.now() }).quiet,
    'deliveries signed with the old secret still arrive after the old endpoint was deleted; rerun this command to wait again',
    settings.waitTimeoutMillis + settings.quietForMillis,
  );
  const kept = await retireSecrets(settings, oldFingerprints);
  await writeRotationState(settings.secretsFile, { ...state, finished_at: new Date().toISOString() });
  await waitForReplicas(settings, `has dropped ${oldFingerprints.join(', ')}`, (report) => oldFingerprints.every((entry) => !hasLoaded(report, entry)));
  say(`retired ${oldFingerprints.join(', ')}; in force: ${kept.join(', ')}`);
  const newEndpointId = state.new_endpoint_id!;
  const pulumiSteps = [`pulumi config set stripeWebhookEndpointId ${newEndpointId}`, `pulumi config set --secret stripeWebhookSecret < ${settings.secretsFile}`, 'pulumi up'];
  say(
    `\nIf Pulumi manages this endpoint, its state still describes ${oldEndpointId}, which is gone, and it has never seen the new secret ` +
      '(Stripe shows it only on create, so `pulumi refresh` cannot learn it, and refuses, naming the new endpoint). Adopt the new endpoint, from the repository root:\n' +
      pulumiSteps.map((step) => `  ${step}`).join('\n') +
      `\n(the secrets file now holds only the new endpoint's secret). pulumi up then manages ${newEndpointId} in place, drops ${oldEndpointId} from its state, and writes the same secret into the secrets file.`,
  );
  return { action: 'replace-endpoint', old_endpoint_id: oldEndpointId, new_endpoint_id: newEndpointId, new_fingerprint: state.new_fingerprint, retired: oldFingerprints, in_force: kept, next_steps: pulumiSteps };
}

/** Create, add the secret, wait for the replicas, subscribe, wait for a delivery, delete the old endpoint. */
async function replaceUpToDeletion(settings: Settings, oldEndpointId: string, stripe: StripeEndpoints, inProgress: RotationState | undefined): Promise<{ state: RotationState } | { dryRun: Record<string, unknown> }> {
  const oldSecrets = (await readSecretsFile(settings.secretsFile)).map((entry) => entry.fingerprint);
  const old = await stripe.retrieve(oldEndpointId);
  if (!old) throw new Error(`Stripe has no webhook endpoint ${oldEndpointId} in this key's mode: check the id (Dashboard → Developers → Webhooks) and the key's mode`);
  if (settings.dryRun) {
    say(
      `would create an endpoint for ${old.url} (${old.enabled_events.length} event types, API version ${old.api_version ?? 'account default'}), add its secret beside ${oldSecrets.join(', ')}, ` +
        `wait for the replicas and a delivery, delete ${oldEndpointId}, and retire the old secret after ${settings.quietForMillis / 1000} s without deliveries signed with it`,
    );
    return { dryRun: { action: 'replace-endpoint', dry_run: true, old_endpoint_id: oldEndpointId, url: old.url } };
  }

  // Stripe shows a secret only on create; the same Idempotency-Key replays that answer on a rerun (24 h).
  const created = await stripe.createLike(old, oldEndpointId);
  const fingerprint = fingerprintSecret(created.secret);
  say(`endpoint ${created.id} for ${created.url}, signing secret ${fingerprint}`);
  const { added } = await addSecret(settings, created.secret);
  if (added) say(`added ${fingerprint} to ${settings.secretsFile}`);
  const nowMillis = Date.now();
  let state: RotationState = inProgress ?? {
    kind: 'endpoint-replacement',
    started_at: iso(nowMillis),
    expires_at: iso(nowMillis + settings.expiresInMillis),
    old_fingerprints: oldSecrets.filter((entry) => entry !== fingerprint),
    new_fingerprint: fingerprint,
    service_urls: settings.serviceUrls,
    all_loaded_at: null,
    old_endpoint_id: oldEndpointId,
    new_endpoint_id: created.id,
    finished_at: null,
  };
  await writeRotationState(settings.secretsFile, state);
  state = await waitForNewSecretLoaded(settings, state);

  await stripe.subscribe(created.id, old.enabled_events);
  say(`${created.id} now receives the ${old.enabled_events.length} event types of ${oldEndpointId}; waiting for a delivery that verifies with ${fingerprint}…`);
  await waitUntil(
    settings,
    async () => (await askReplicas(settings.serviceUrls)).some((report) => (verifiedWith(report, fingerprint)?.verified_deliveries ?? 0) > 0),
    `no delivery has verified with ${fingerprint} yet (no event of its types happened, or its deliveries do not reach the service): the old endpoint still delivers, nothing is lost; rerun this command to wait again`,
  );
  await stripe.delete(oldEndpointId);
  state = { ...state, old_endpoint_deleted_at: new Date().toISOString() };
  await writeRotationState(settings.secretsFile, state);
  say(`deleted the old endpoint ${oldEndpointId}; waiting ${settings.quietForMillis / 1000} s without deliveries signed with ${state.old_fingerprints.join(', ')}…`);
  return { state };
}

async function waitUntil(settings: Settings, condition: () => Promise<boolean>, notYet: string, timeoutMillis = settings.waitTimeoutMillis): Promise<void> {
  const deadline = Date.now() + timeoutMillis;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new NotYet(`after ${Math.round(timeoutMillis / 1000)} s, ${notYet}`);
    await sleep(pollMillis);
  }
}

// -- Status --------------------------------------------------------------------------------------------

async function status(settings: Settings): Promise<Record<string, unknown>> {
  const secrets = (await readSecretsFile(settings.secretsFile)).map((entry) => entry.fingerprint);
  const state = await readRotationState(settings.secretsFile);
  const reports = await askReplicas(settings.serviceUrls);
  say(`secrets in force (oldest first): ${secrets.join(', ')}`);
  for (const report of reports) {
    say(report.problem ?? `${report.url}: ${report.fingerprints.map((entry) => `${entry.fingerprint}${entry.loaded ? '' : ' (retired)'} ${entry.verified_deliveries} verified, last ${entry.last_verified_at ?? 'never'}`).join('; ')}`);
  }
  if (state) say(`${state.finished_at ? 'last rotation' : 'rotation in progress'}: ${state.kind} to ${state.new_fingerprint}, started ${state.started_at}${state.finished_at ? `, finished ${state.finished_at}` : `, overlap ends ${state.expires_at}`}`);
  return { action: 'status', fingerprints: secrets, rotation: state ?? null, replicas: reports };
}

async function main(): Promise<number> {
  const cli = parseCommandLine({
    usage,
    options: {
      'secrets-file': { type: 'string' },
      'service-url': { type: 'string', multiple: true },
      'expires-in': { type: 'string', default: '24h' },
      'quiet-for': { type: 'string', default: '10m' },
      'wait-timeout': { type: 'string', default: '5m' },
      finish: { type: 'boolean', default: false },
      'replace-endpoint': { type: 'string' },
      status: { type: 'boolean', default: false },
      'dry-run': { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
    },
  });
  const { values } = cli;
  const modes = [values.finish, values['replace-endpoint'] !== undefined, values.status].filter(Boolean).length;
  if (modes > 1) cli.fail('give at most one of --finish, --replace-endpoint and --status');
  if (values['replace-endpoint'] !== undefined && !/^we_\w+$/.test(values['replace-endpoint'])) cli.fail(`--replace-endpoint takes a webhook endpoint id (we_…), got "${values['replace-endpoint']}"`);
  const serviceUrls = values['service-url'] ?? ['http://127.0.0.1:3000'];
  for (const url of serviceUrls) {
    if (!/^https?:\/\/[^/\s]+\/?$/.test(url)) cli.fail(`--service-url takes a replica's base URL such as http://10.0.0.5:3000, got "${url}"`);
  }
  const chosen = chooseSecretsFile(values['secrets-file'], process.env);
  say(`secrets file: ${chosen.file} (${chosen.because})`);
  const settings: Settings = {
    secretsFile: chosen.file,
    serviceUrls,
    expiresInMillis: durationMillis(cli, '--expires-in', values['expires-in']),
    quietForMillis: durationMillis(cli, '--quiet-for', values['quiet-for']),
    waitTimeoutMillis: durationMillis(cli, '--wait-timeout', values['wait-timeout']),
    dryRun: values['dry-run'],
    json: values.json,
  };

  let result: Record<string, unknown>;
  try {
    if (values.status) result = await status(settings);
    else if (values.finish) result = await finishDashboardRoll(settings);
    else if (values['replace-endpoint'] !== undefined) result = await replaceEndpoint(settings, values['replace-endpoint'], openStripeEndpoints(process.env));
    else result = await startDashboardRoll(settings);
  } catch (error) {
    if (!(error instanceof NotYet)) throw error;
    say(`not yet: ${error.message}`);
    if (settings.json) process.stdout.write(`${JSON.stringify({ ok: false, not_yet: error.message })}\n`);
    return exitCodes.notYet;
  }
  if (settings.json) process.stdout.write(`${JSON.stringify({ ok: true, secrets_file: settings.secretsFile, ...result })}\n`);
  return exitCodes.done;
}

if (require.main === module) {
  main().then(
    (code) => process.exit(code),
    (error: unknown) => {
      const message = error instanceof ConfigError ? `Configuration error: ${error.message}` : describeError(error).message;
      say(`rotate-webhook-secret: ${message}`);
      if (process.argv.includes('--json')) process.stdout.write(`${JSON.stringify({ ok: false, error: message })}\n`);
      process.exit(exitCodes.failed);
    },
  );
}
