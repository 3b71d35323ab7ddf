import { readFileSync } from 'node:fs';
import path from 'node:path';

/** The nginx template this module fills in; it lives beside the program so operators can read it as nginx. */
export const nginxTemplatePath = path.join(__dirname, '..', 'nginx', 'stripe-credits.conf.template');

/** Where nginx keeps its pid file and request temp files inside the official image. */
export const containerRuntimeDir = '/var/cache/nginx';
/** Where the nginx container sees the host's ACME webroot. */
export const containerAcmeWebroot = '/var/www/acme';

export interface NginxConfigParams {
  /** Public host name: the certificate's name and the one in the webhook URL. */
  domain: string;
  /** `listen` targets, e.g. `443` in the container or `127.0.0.1:18443` in a test. */
  httpsListen: string;
  httpListen: string;
  /** The HTTPS port clients see, for the HTTP → HTTPS redirect. */
  httpsPublicPort: number;
  tlsCertificatePath: string;
  tlsKeyPath: string;
  /** Folder served at /.well-known/acme-challenge/ on plain HTTP, for certbot's webroot mode. */
  acmeWebroot: string;
  /** `host:port` that resolves (through `resolver`) to every replica. */
  upstream: string;
  /** DNS server nginx asks for `upstream`: Docker's embedded one is 127.0.0.11. */
  resolver: string;
  /** How long nginx keeps the answer: short enough to see a new replica before an old one stops (rollout.ts). */
  resolverValidSeconds: number;
  /** Must equal the service's WEBHOOK_MAX_BODY_BYTES. */
  maxBodyBytes: number;
  webhookRatePerSecond: number;
  webhookBurst: number;
  /** Directory for the pid file and temp files. */
  runtimeDir: string;
  errorLog: string;
  accessLog: string;
  workerProcesses: number | 'auto';
  /** Account for worker processes when the master runs as root (`nginx` in the official image). */
  workerUser?: string;
}

const hostName = /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i;
const listenTarget = /^((\d{1,3}\.){3}\d{1,3}:)?\d{1,5}$/;
const hostPort = /^[a-z0-9.-]+(:\d{1,5})?$/i;
const filePath = /^\/[\w./-]*$/;
const account = /^[a-z_][a-z0-9_-]*$/;

/** Fills the template; every value is checked so that none can smuggle nginx syntax into the file. */
export function renderNginxConfig(params: NginxConfigParams, template = readFileSync(nginxTemplatePath, 'utf8')): string {
  const values: Record<string, string> = {
    domain: checked('domain', params.domain, hostName),
    httpsListen: checked('httpsListen', params.httpsListen, listenTarget),
    httpListen: checked('httpListen', params.httpListen, listenTarget),
    httpsPortSuffix: params.httpsPublicPort === 443 ? '' : `:${port('httpsPublicPort', params.httpsPublicPort)}`,
    tlsCertificate: checked('tlsCertificatePath', params.tlsCertificatePath, filePath),
    tlsKey: checked('tlsKeyPath', params.tlsKeyPath, filePath),
    acmeWebroot: checked('acmeWebroot', params.acmeWebroot, filePath),
    upstream: checked('upstream', params.upstream, hostPort),
    resolver: checked('resolver', params.resolver, hostPort),
    resolverValidSeconds: String(positiveInteger('resolverValidSeconds', params.resolverValidSeconds)),
    maxBodyBytes: String(positiveInteger('maxBodyBytes', params.maxBodyBytes)),
    webhookRatePerSecond: String(positiveInteger('webhookRatePerSecond', params.webhookRatePerSecond)),
    webhookBurst: String(positiveInteger('webhookBurst', params.webhookBurst)),
    runtimeDir: checked('runtimeDir', params.runtimeDir, filePath),
    errorLog: checked('errorLog', params.errorLog, filePath),
    accessLog: checked('accessLog', params.accessLog, filePath),
    workerProcesses:
      params.workerProcesses === 'auto' ? 'auto' : String(positiveInteger('workerProcesses', params.workerProcesses)),
    userDirective:
      params.workerUser === undefined ? '# user: the account nginx was started as' : `user ${checked('workerUser', params.workerUser, account)};`,
  };
  return fillTemplate(template, values);
}

/** Replaces each `{{name}}`; a placeholder without a value, or a value without a placeholder, is a bug. */
export function fillTemplate(template: string, values: Record<string, string>): string {
  const unused = new Set(Object.keys(values));
  const filled = template.replace(/\{\{(\w+)\}\}/g, (_match, name: string) => {
    const value = values[name];
    if (value === undefined) throw new Error(`The nginx template uses {{${name}}}, which has no value.`);
    unused.delete(name);
    return value;
  });
  if (unused.size > 0) throw new Error(`The nginx template has no place for: ${[...unused].join(', ')}.`);
  return filled;
}

function checked(name: string, value: string, pattern: RegExp): string {
  if (!pattern.test(value)) throw new Error(`nginx ${name} "${value}" is not allowed (expected ${pattern}).`);
  return value;
}

function positiveInteger(name: string, value: number): number {
  if (!Number.isInteger(value) || value < 1) throw new Error(`nginx ${name} must be a positive whole number, got ${value}.`);
  return value;
}

function port(name: string, value: number): number {
  if (positiveInteger(name, value) > 65535) throw new Error(`nginx ${name} must be a port number, got ${value}.`);
  return value;
}
