/**
 * The signing secret: the file exists, parses as the service parses it, and only its owner can read it; each
 * running service has loaded the secret the deployment recorded for the endpoint (by fingerprint: the doctor
 * never prints a secret), and what the file holds.
 */
import { readFile, stat } from 'node:fs/promises';
import { parseSecrets, SecretFileError } from '../../service/webhook/secretStore';
import type { CommandRunner } from './commandRunner';
import { failed, ok, skipped, type CheckResult } from './report';

/** Group and others may neither read nor write a secret file. */
const unsafePermissionBits = 0o066;
const requestTimeoutMillis = 5_000;

export interface SecretFileFindings {
  result: CheckResult;
  /** Fingerprints of the secrets in the file, when it parsed. */
  fingerprints?: string[];
}

export async function checkSecretFile(file: string | undefined): Promise<SecretFileFindings> {
  const title = 'the webhook secret file exists, parses and only its owner may read it';
  if (!file) return { result: skipped('secrets', 'secret-file', title, 'no file named: set STRIPE_WEBHOOK_SECRET_FILE (on a stack, run the doctor on the Docker host to check its file)') };
  let mode: number;
  let content: string;
  try {
    mode = (await stat(file)).mode & 0o777;
    content = await readFile(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'error';
    return {
      result: failed('secrets', 'secret-file', title, {
        detail: `${file} cannot be read (${code})`,
        fix: code === 'ENOENT'
          ? `write the endpoint's secret into it: \`scripts/rotate-webhook-secret.sh add ${file} < secret\` (or pulumi up for a stack), then chmod 600 ${file}.`
          : `let the doctor's user read it (run it as the service's user), or fix the path in STRIPE_WEBHOOK_SECRET_FILE.`,
      }),
    };
  }
  let fingerprints: string[];
  try {
    fingerprints = parseSecrets(content, file).map((secret) => secret.fingerprint);
  } catch (error) {
    const message = error instanceof SecretFileError ? error.message : 'it cannot be parsed';
    return { result: failed('secrets', 'secret-file', title, { detail: message, fix: `one "whsec_…" secret per line, nothing else: rewrite ${file} (the service keeps its previous secrets until the file parses).` }) };
  }
  const octal = `0${mode.toString(8).padStart(3, '0')}`;
  if ((mode & unsafePermissionBits) !== 0) {
    return {
      fingerprints,
      result: failed('secrets', 'secret-file', title, {
        detail: `${file} has mode ${octal}: other users of the machine may read or change the signing secret`,
        fix: `chmod 600 ${file} (0400 as the deployment writes it); it is read by the service's own user only.`,
      }),
    };
  }
  return { fingerprints, result: ok('secrets', 'secret-file', title, { detail: `${file}, mode ${octal}, ${fingerprints.length} secret${fingerprints.length > 1 ? 's' : ''}: fingerprint ${fingerprints.join(', ')}` }) };
}

/** A running service: reached on its own port, or inside its container through docker. */
export type ServiceTarget = { kind: 'url'; url: string } | { kind: 'container'; container: string; dockerCommand: string; dockerHost?: string };

interface LoadedSecret {
  fingerprint: string;
  loaded: boolean;
  verified_deliveries: number;
  last_verified_at: string | null;
}

// Run inside a replica's container, whose PORT the deployment sets: the endpoint is not reachable through nginx.
const inContainerScript =
  "fetch('http://127.0.0.1:'+(process.env.PORT||3000)+'/webhook-secrets').then(r=>{if(!r.ok)throw new Error('HTTP '+r.status);return r.text()}).then(t=>process.stdout.write(t),e=>{console.error(e.message);process.exit(1)})";

export function serviceName(target: ServiceTarget): string {
  return target.kind === 'url' ? target.url : `container ${target.container}`;
}

async function loadedSecrets(target: ServiceTarget, run: CommandRunner): Promise<LoadedSecret[]> {
  let text: string;
  if (target.kind === 'url') {
    const response = await fetch(new URL('/webhook-secrets', target.url), { signal: AbortSignal.timeout(requestTimeoutMillis) });
    if (!response.ok) throw new Error(`GET /webhook-secrets answered ${response.status}`);
    text = await response.text();
  } else {
    const result = await run(target.dockerCommand, [...(target.dockerHost ? ['-H', target.dockerHost] : []), 'exec', target.container, 'node', '-e', inContainerScript]);
    if (result.code !== 0) throw new Error(result.stderr.trim().split('\n').pop() || `docker exec exited ${result.code}`);
    text = result.stdout;
  }
  const body = JSON.parse(text) as { fingerprints?: LoadedSecret[] };
  if (!Array.isArray(body.fingerprints)) throw new Error('GET /webhook-secrets did not list fingerprints (a service older than this doctor?)');
  return body.fingerprints;
}

export interface ServiceSecretsOptions {
  targets: readonly ServiceTarget[];
  /** The fingerprint the deployment recorded for the endpoint (stack output webhookSecretFingerprint). */
  expectedFingerprint?: string;
  endpointId?: string;
  /** The secret file the doctor read, and its fingerprints: a service should have loaded all of them. */
  secretFile?: string;
  fileFingerprints?: string[];
  run: CommandRunner;
}

export async function checkServiceSecrets(options: ServiceSecretsOptions): Promise<CheckResult[]> {
  const title = (target: ServiceTarget) => `${serviceName(target)} has loaded the endpoint's signing secret`;
  if (options.targets.length === 0) {
    return [skipped('secrets', 'service-secrets', "the running service has loaded the endpoint's signing secret", 'no service named: give --service-url URL (its own port, not the edge) or --stack')];
  }
  return Promise.all(
    options.targets.map(async (target): Promise<CheckResult> => {
      let secrets: LoadedSecret[];
      try {
        secrets = await loadedSecrets(target, options.run);
      } catch (error) {
        const message = (error as Error).message;
        return failed('secrets', 'service-secrets', title(target), {
          detail: `cannot ask it (${(error as { cause?: { code?: string } }).cause?.code ?? message})`,
          fix: target.kind === 'url'
            ? `start the service, or give the URL of its own port (PORT, default 3000) with --service-url; the edge (nginx) does not route /webhook-secrets.`
            : `the replica is not running: \`docker ps -a --filter name=${target.container}\`, and \`docker logs ${target.container}\` says why.`,
        });
      }
      const loaded = secrets.filter((secret) => secret.loaded);
      const describe = (secret: LoadedSecret) =>
        `${secret.fingerprint}${secret.loaded ? '' : ' (retired)'}: ${secret.verified_deliveries} deliveries verified${secret.last_verified_at ? `, last ${secret.last_verified_at}` : ''}`;
      const items = secrets.map(describe);
      const loadedNames = loaded.map((secret) => secret.fingerprint);
      if (options.expectedFingerprint && !loadedNames.includes(options.expectedFingerprint)) {
        return failed('secrets', 'service-secrets', title(target), {
          detail: `the deployment recorded fingerprint ${options.expectedFingerprint} for ${options.endpointId ?? 'the endpoint'}, but the service has loaded ${loadedNames.join(', ') || 'nothing'}: it refuses (400) every delivery of that endpoint`,
          items,
          fix:
            'its secret file does not hold the endpoint\'s secret. Stack: `pulumi up` writes it again from the stack\'s state (after a Dashboard roll, first `pulumi config set --secret stripeWebhookSecret whsec_…`). ' +
            'By hand: copy the secret from the Dashboard (Developers → Webhooks → the endpoint → Reveal) and `scripts/rotate-webhook-secret.sh add < secret`; the service reloads the file, nothing restarts. Then re-apply the refused events (see the pending deliveries).',
        });
      }
      const notLoaded = (options.fileFingerprints ?? []).filter((fingerprint) => !loadedNames.includes(fingerprint));
      if (notLoaded.length > 0) {
        return failed('secrets', 'service-secrets', title(target), {
          detail: `${options.secretFile} holds ${notLoaded.join(', ')}, which the service has not loaded (it has ${loadedNames.join(', ') || 'nothing'})`,
          items,
          fix: 'the service reads another file (compare its STRIPE_WEBHOOK_SECRET_FILE with the doctor\'s), or the file changed within the last 2 s (run again); its log says "webhook secret file invalid" when it refused a change.',
        });
      }
      const against = options.expectedFingerprint ? `the deployment's ${options.expectedFingerprint} among them` : 'no recorded fingerprint to compare with (give --stack or --stack-outputs)';
      return ok('secrets', 'service-secrets', title(target), { detail: `loaded ${loadedNames.join(', ')}; ${against}`, items });
    }),
  );
}
