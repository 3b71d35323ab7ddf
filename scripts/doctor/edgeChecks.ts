/**
 * The public side: does the webhook URL reach the service (an unsigned POST must be refused with 400, as the
 * old guide's `curl -I` tried to show), over HTTPS with a certificate Node trusts, and does nginx accept its
 * configuration (`nginx -t`, in the stack's container or on a file)?
 */
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import { rootCertificates, type PeerCertificate, type TLSSocket } from 'node:tls';
import { isLoopbackHost } from '../../service/config';
import { webhookPath } from '../../service/webhook/route';
import { lastLines, type CommandRunner } from './commandRunner';
import { failed, ok, skipped, type CheckResult } from './report';

const requestTimeoutMillis = 10_000;
const millisPerDay = 86_400_000;

interface Answer {
  status: number;
  certificate?: PeerCertificate;
}

/** Certificate problems Node reports while verifying the chain or the name. */
const tlsErrorCodes = /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER|ALTNAME|ERR_TLS|ERR_SSL|EPROTO/;

function postUnsigned(url: URL, extraCa: string | undefined): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const body = '{}';
    const options: https.RequestOptions = {
      method: 'POST',
      agent: false,
      timeout: requestTimeoutMillis,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'user-agent': 'stripe-credits-doctor' },
      // Node's own verification (chain and name); an extra CA adds to the system's, it does not replace them.
      ...(url.protocol === 'https:' && extraCa ? { ca: [...rootCertificates, extraCa] } : {}),
    };
    const request = (url.protocol === 'https:' ? https : http).request(url, options, (response) => {
      const certificate = url.protocol === 'https:' ? (response.socket as TLSSocket).getPeerCertificate() : undefined;
      response.resume();
      response.on('end', () => resolve({ status: response.statusCode ?? 0, certificate }));
      response.on('error', reject);
    });
    request.on('timeout', () => request.destroy(Object.assign(new Error(`no answer within ${requestTimeoutMillis / 1000} s`), { code: 'ETIMEDOUT' })));
    request.on('error', reject);
    request.end(body);
  });
}

/** What an unexpected answer to an unsigned POST means, and what to do. */
function statusFix(status: number, url: URL, local: boolean): string {
  if (status === 404) {
    return local
      ? `nothing at ${url.pathname} answers POST: the service's webhook is ${webhookPath}; fix the URL (and the Stripe endpoint's URL).`
      : `the edge does not route ${url.pathname} to the service: the endpoint URL must be https://<domain>${webhookPath}, and nginx must run the config \`pulumi up\` renders (nginx/stripe-credits.conf.template); run \`pulumi up\` to put it back.`;
  }
  if (status === 405) return `POST is not allowed at ${url.pathname}: something other than this service's webhook answers there (a different path, or a proxy that allows only GET); point the URL at ${webhookPath}.`;
  if (status === 429) return 'the edge rate-limited this request (webhookRateLimitPerSecond / webhookRateLimitBurst): run the doctor again; if Stripe sees 429 too, raise the limit with pulumi config set and pulumi up.';
  if (status === 502 || status === 504) return 'nginx answers but reaches no replica: `docker ps --filter label=stripe-credits.role=api` must list them (healthy); `docker logs` of a replica says why it stopped.';
  if (status === 503) return 'the service answers 503: its database is unreachable (see the Database checks) or it is shutting down; Stripe retries.';
  if (status >= 500) return 'the service fails on an unsigned request: a bug or a broken start — read the replica\'s log (docker logs, or npm start\'s output).';
  if (status >= 200 && status < 300) return 'an unsigned POST was accepted: this is not the service\'s webhook (its signature check answers 400). Point the URL at the service.';
  return `unexpected status ${status}: the service answers 400 to an unsigned POST; check what answers at ${url.origin}.`;
}

function connectionFix(code: string | undefined, url: URL, local: boolean): string {
  const where = `${url.hostname}:${url.port || (url.protocol === 'https:' ? 443 : 80)}`;
  if (code === 'ECONNREFUSED') {
    return local
      ? `nothing listens at ${where}: start the service (npm start, or its PORT/HOST), or pass its URL with --service-url / --webhook-url.`
      : `nothing listens at ${where}: is the nginx container running (docker ps --filter label=stripe-credits.role=nginx)? Is httpsPort published and open in the firewall?`;
  }
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return `${url.hostname} does not resolve: create its DNS A/AAAA record pointing at the Docker host (check: dig +short ${url.hostname}).`;
  return `no answer from ${where}: a firewall, or the host is down.`;
}

export interface WebhookUrlCheckOptions {
  url: URL;
  /** PEM of an extra certificate authority to trust (a test or private CA). */
  extraCa?: string;
  extraCaFile?: string;
  nowMillis: number;
}

/** Two checks: the TLS certificate (https only) and the unsigned POST's answer. */
export async function checkWebhookUrl({ url, extraCa, extraCaFile, nowMillis }: WebhookUrlCheckOptions): Promise<CheckResult[]> {
  const local = isLoopbackHost(url.hostname);
  const urlTitle = `${url.href} answers 400 to an unsigned POST`;
  const tlsTitle = 'HTTPS with a certificate Node trusts';
  let answer: Answer;
  try {
    answer = await postUnsigned(url, extraCa);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const message = (error as Error).message;
    if (url.protocol === 'https:' && code !== undefined && tlsErrorCodes.test(code)) {
      const trustHint = extraCaFile
        ? `it is not signed by ${extraCaFile} either`
        : 'for a self-signed or private-CA certificate (a test stack), pass its CA with --ca-file';
      return [
        failed('edge', 'webhook-tls', tlsTitle, {
          detail: `${url.host}: ${message} (${code})`,
          fix: `Stripe refuses such a certificate just as Node does. Install one for ${url.hostname} from a public CA (README "TLS certificates": certbot, then pulumi up); ${trustHint}.`,
        }),
        skipped('edge', 'webhook-url', urlTitle, 'not reached: the TLS handshake failed'),
      ];
    }
    const results = [failed('edge', 'webhook-url', urlTitle, { detail: `${message}${code ? ` (${code})` : ''}`, fix: connectionFix(code, url, local) })];
    if (url.protocol === 'https:') results.unshift(skipped('edge', 'webhook-tls', tlsTitle, 'no TLS connection was made'));
    return results;
  }

  const results: CheckResult[] = [];
  if (url.protocol === 'https:') {
    const validTo = answer.certificate?.valid_to ? Date.parse(answer.certificate.valid_to) : NaN;
    const daysLeft = Math.floor((validTo - nowMillis) / millisPerDay);
    results.push(ok('edge', 'webhook-tls', tlsTitle, { detail: `valid for ${url.hostname}${Number.isFinite(daysLeft) ? `, expires in ${daysLeft} days (${new Date(validTo).toISOString().slice(0, 10)})` : ''}` }));
  } else if (local) {
    results.push(skipped('edge', 'webhook-tls', tlsTitle, 'a local http:// URL (Stripe itself delivers to https only)'));
  } else {
    results.push(
      failed('edge', 'webhook-tls', tlsTitle, {
        detail: `${url.href} is plain http`,
        fix: `Stripe delivers live events to https:// URLs only: use https://${url.host}${url.pathname} (the stack's nginx serves it).`,
      }),
    );
  }
  if (answer.status === 400) results.push(ok('edge', 'webhook-url', urlTitle, { detail: 'answered 400: it reaches the service, which refuses what Stripe did not sign' }));
  else results.push(failed('edge', 'webhook-url', urlTitle, { detail: `answered ${answer.status}`, fix: statusFix(answer.status, url, local) }));
  return results;
}

/** Where `nginx -t` runs: in the stack's nginx container (through docker), or on a config file here. */
export type NginxTarget =
  | { kind: 'container'; container: string; dockerCommand: string; dockerHost?: string }
  | { kind: 'file'; configFile: string; nginxCommand: string };

export async function checkNginxConfig(target: NginxTarget | undefined, run: CommandRunner): Promise<CheckResult> {
  const title = 'nginx accepts its configuration (nginx -t)';
  if (!target) return skipped('edge', 'nginx-config', title, 'no nginx named: give --stack / --stack-outputs (its nginxContainer), --nginx-container NAME, or --nginx-config FILE');
  const [program, args, where] =
    target.kind === 'container'
      ? [target.dockerCommand, [...(target.dockerHost ? ['-H', target.dockerHost] : []), 'exec', target.container, 'nginx', '-t'], `in container ${target.container}`]
      : [target.nginxCommand, ['-t', '-p', path.dirname(path.resolve(target.configFile)), '-c', path.resolve(target.configFile)], `on ${target.configFile}`];
  const result = await run(program, args);
  const output = `${result.stderr}\n${result.stdout}`;
  if (result.code === 0 && /test is successful/.test(output)) return ok('edge', 'nginx-config', title, { detail: `${where}: the configuration test is successful` });
  const notFound = /command not found/.test(output);
  const fix = notFound
    ? target.kind === 'container'
      ? `install the Docker CLI (or pass --docker-command PATH); for a remote Docker host add --docker-host ssh://user@host.`
      : 'install nginx (Debian: apt-get install nginx-light) or pass --nginx-command PATH.'
    : /No such container|is not running/.test(output)
      ? `the nginx container is not running: \`docker start ${target.kind === 'container' ? target.container : 'the nginx container'}\`, or \`pulumi up\` to recreate it; \`docker logs\` of it says why it stopped.`
      : 'nginx names the file and line above. The stack\'s config is rendered by infra/nginxConfig.ts from nginx/stripe-credits.conf.template: fix the template or the setting it names (certificate paths, domain), then `pulumi up`.';
  return failed('edge', 'nginx-config', title, { detail: `${where}: nginx -t failed (exit ${result.code})`, items: lastLines(output), fix });
}
