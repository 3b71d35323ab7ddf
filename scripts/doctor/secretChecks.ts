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

/** What a look at the file found: where it is, its mode and fingerprints, or why it could not be read or parsed. */
interface FileLook {
  file: string;
  mode?: number;
  fingerprints?: string[];
  /** An errno code when the file could not be read. */
  readError?: string;
  /** parseSecrets' message (it names the line, never its content). */
  parseError?: string;
}

/** Where the secret file is checked: here, or inside a replica's container (a stack's file lives there). */
export type SecretFileTarget = { kind: 'file'; path: string } | { kind: 'container'; container: string; dockerCommand: string; dockerHost?: string };

async function lookHere(file: string): Promise<FileLook> {
  let mode: number;
  let content: string;
  try {
    mode = (await stat(file)).mode & 0o777;
    content = await readFile(file, 'utf8');
  } catch (error) {
    return { file, readError: (error as NodeJS.ErrnoException).code ?? 'error' };
  }
  try {
    return { file, mode, fingerprints: parseSecrets(content, file).map((secret) => secret.fingerprint) };
  } catch (error) {
    return { file, mode, parseError: error instanceof SecretFileError ? error.message : 'it cannot be parsed' };
  }
}

// Run inside a replica: the file its STRIPE_WEBHOOK_SECRET_FILE names, parsed by the image's own parseSecrets
// (the image's working directory is /app); only the mode and fingerprints come out, never the secret.
const inContainerFileScript = [
  "const fs=require('fs');const f=process.env.STRIPE_WEBHOOK_SECRET_FILE;const out=(o)=>process.stdout.write(JSON.stringify(o));",
  "if(!f){out({file:'(STRIPE_WEBHOOK_SECRET_FILE not set)',readError:'ENOENT'});process.exit(0)}",
  "let mode,content;try{mode=fs.statSync(f).mode&0o777;content=fs.readFileSync(f,'utf8')}catch(e){out({file:f,readError:e.code||'error'});process.exit(0)}",
  "try{const {parseSecrets}=require('./dist/service/webhook/secretStore.js');out({file:f,mode,fingerprints:parseSecrets(content,f).map(s=>s.fingerprint)})}",
  "catch(e){out({file:f,mode,parseError:e.name==='SecretFileError'?e.message:'it cannot be parsed'})}",
].join('');

async function lookInContainer(target: Extract<SecretFileTarget, { kind: 'container' }>, run: CommandRunner): Promise<FileLook> {
  const result = await run(target.dockerCommand, [...(target.dockerHost ? ['-H', target.dockerHost] : []), 'exec', target.container, 'node', '-e', inContainerFileScript]);
  if (result.code !== 0) throw new Error(result.stderr.trim().split('\n').pop() || `docker exec exited ${result.code}`);
  return JSON.parse(result.stdout) as FileLook;
}

export async function checkSecretFile(target: SecretFileTarget | undefined, run: CommandRunner): Promise<SecretFileFindings> {
  const where = target?.kind === 'container' ? ` in container ${target.container}` : '';
  const title = `the webhook secret file${where} exists, parses and only its owner may read it`;
  if (!target) return { result: skipped('secrets', 'secret-file', title, 'no file named: set STRIPE_WEBHOOK_SECRET_FILE, or give a stack (its replicas are asked)') };
  let look: FileLook;
  try {
    look = target.kind === 'file' ? await lookHere(target.path) : await lookInContainer(target, run);
  } catch (error) {
    return {
      result: failed('secrets', 'secret-file', title, {
        detail: `cannot look inside ${target.kind === 'container' ? target.container : 'it'} (${(error as Error).message})`,
        fix: target.kind === 'container' ? `the replica is not running: \`docker ps -a --filter name=${target.container}\`, and \`docker logs ${target.container}\` says why.` : 'fix the path.',
      }),
    };
  }
  const { file } = look;
  if (look.readError) {
    return {
      result: failed('secrets', 'secret-file', title, {
        detail: `${file} cannot be read (${look.readError})`,
        fix:
          target.kind === 'container'
            ? '`pulumi up` writes it (the replicas mount its directory); if it is gone from the Docker host, run `pulumi up` again.'
            : look.readError === 'ENOENT'
              ? `write the endpoint's secret into it: \`scripts/rotate-webhook-secret.sh add ${file} < secret\` (or pulumi up for a stack), then chmod 600 ${file}.`
              : 'let the doctor\'s user read it (run it as the service\'s user), or fix the path in STRIPE_WEBHOOK_SECRET_FILE.',
      }),
    };
  }
  if (look.parseError) {
    return { result: failed('secrets', 'secret-file', title, { detail: look.parseError, fix: `one "whsec_…" secret per line, nothing else: rewrite ${file} (the service keeps its previous secrets until the file parses).` }) };
  }
  const fingerprints = look.fingerprints ?? [];
  const mode = look.mode ?? 0;
  const octal = `0${mode.toString(8).padStart(3, '0')}`;
  if ((mode & unsafePermissionBits) !== 0) {
    return {
      fingerprints,
      result: failed('secrets', 'secret-file', title, {
        detail: `${file} has mode ${octal}: other users of the machine may read or change the signing secret`,
        fix: target.kind === 'container'
          ? `the deployment writes it 0400: \`pulumi up\` rewrites it; on the Docker host, chmod 400 the file under /srv/stripe-credits/<stack>/secrets/.`
          : `chmod 600 ${file} (0400 as the deployment writes it); it is read by the service's own user only.`,
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
