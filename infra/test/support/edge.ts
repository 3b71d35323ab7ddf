import { readFileSync } from 'node:fs';
import path from 'node:path';
import { configDefaults } from '../../config';
import { renderNginxConfig } from '../../nginxConfig';
import { resolverValidSeconds } from '../../rollout';
import type { Edge } from './httpsClient';
import { startNginx, type NginxProcess } from './nginxProcess';
import { freePort } from '../../../service/test/support/freePort';
import { makeSelfSignedCertificate } from './tls';

/** The host name the test certificate is for. */
export const edgeDomain = 'billing.test';
/** The replicas' shared name, as the Docker network alias in infra/index.ts. */
export const upstreamName = 'billing-api';

/**
 * The config exactly as infra/index.ts renders it, placed on loopback ports and paths of a test, with a fresh
 * self-signed certificate for `domain` in `dir` (tls.crt, the CA a client trusts).
 */
export function edgeConfig(dir: string, ports: { https: number; http: number }, upstream: string, resolver: string, domain = edgeDomain): string {
  const tls = makeSelfSignedCertificate(dir, domain);
  return renderNginxConfig({
    domain,
    httpsListen: `127.0.0.1:${ports.https}`,
    httpListen: `127.0.0.1:${ports.http}`,
    httpsPublicPort: ports.https,
    tlsCertificatePath: tls.certificatePath,
    tlsKeyPath: tls.keyPath,
    acmeWebroot: path.join(dir, 'acme'),
    upstream,
    resolver,
    resolverValidSeconds,
    maxBodyBytes: configDefaults.webhookMaxBodyBytes,
    webhookRatePerSecond: configDefaults.webhookRateLimitPerSecond,
    webhookBurst: configDefaults.webhookRateLimitBurst,
    runtimeDir: dir,
    errorLog: path.join(dir, 'error.log'),
    accessLog: path.join(dir, 'access.log'),
    workerProcesses: 1,
  });
}

export interface RunningEdge {
  nginx: NginxProcess;
  edge: Edge;
  httpPort: number;
  config: string;
}

/** Debian's nginx with the deployed config, in front of `upstream` (`billing-api:<port>`) resolved by `resolver`. */
export async function startEdge(dir: string, upstreamPort: number, resolver: string): Promise<RunningEdge> {
  const ports = { https: await freePort(), http: await freePort() };
  const config = edgeConfig(dir, ports, `${upstreamName}:${upstreamPort}`, resolver);
  const nginx = await startNginx(dir, config);
  return { nginx, config, httpPort: ports.http, edge: { host: '127.0.0.1', port: ports.https, domain: edgeDomain, ca: readFileSync(path.join(dir, 'tls.crt')) } };
}
