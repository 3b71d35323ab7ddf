import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fillTemplate, NginxConfigParams, renderNginxConfig } from '../nginxConfig';
import { configDefaults } from '../config';
import { nginxVersion, testNginxConfig } from './support/nginxProcess';
import { makeSelfSignedCertificate } from './support/tls';

let dir: string;
let params: NginxConfigParams;

beforeAll(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'nginx-config-'));
  const tls = makeSelfSignedCertificate(dir, 'billing.example.com');
  params = {
    domain: 'billing.example.com',
    httpsListen: '127.0.0.1:18443',
    httpListen: '127.0.0.1:18080',
    httpsPublicPort: 443,
    tlsCertificatePath: tls.certificatePath,
    tlsKeyPath: tls.keyPath,
    acmeWebroot: path.join(dir, 'acme'),
    upstream: 'billing-api:3000',
    resolver: '127.0.0.11',
    resolverValidSeconds: 2,
    maxBodyBytes: 1048576,
    webhookRatePerSecond: 100,
    webhookBurst: 500,
    runtimeDir: dir,
    errorLog: path.join(dir, 'error.log'),
    accessLog: path.join(dir, 'access.log'),
    workerProcesses: 'auto',
  };
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

test('the rendered config passes nginx -t on Debian nginx 1.22 without a warning (no deprecated directive)', () => {
  const configPath = path.join(dir, 'nginx.conf');
  writeFileSync(configPath, renderNginxConfig(params));
  const report = testNginxConfig(dir, configPath);
  expect(report).toMatch(/syntax is ok[\s\S]*test is successful/);
  expect(report.split('\n').filter((line) => /\[(warn|emerg|alert|crit)\]/.test(line))).toEqual([]);
});

test('the nginx image deployed is the nginx version tested here, pinned by digest', () => {
  const tested = /nginx\/(\d+\.\d+)\./.exec(nginxVersion())?.[1];
  const deployed = /^nginx:(\d+\.\d+)\.\d+[\w.-]*@sha256:[0-9a-f]{64}$/.exec(configDefaults.nginxImage)?.[1];
  expect(tested).toMatch(/^\d+\.\d+$/);
  expect(deployed).toBe(tested);
});

test('the redirect names the public HTTPS port only when it is not 443', () => {
  expect(renderNginxConfig(params)).toContain('return 301 https://billing.example.com$request_uri;');
  expect(renderNginxConfig({ ...params, httpsPublicPort: 8443 })).toContain(
    'return 301 https://billing.example.com:8443$request_uri;',
  );
});

test('a value that would add nginx syntax is refused', () => {
  expect(() => renderNginxConfig({ ...params, domain: 'billing.example.com; include /etc/passwd' })).toThrow(/domain/);
  expect(() => renderNginxConfig({ ...params, tlsKeyPath: '/tmp/key.pem;' })).toThrow(/tlsKeyPath/);
  expect(() => renderNginxConfig({ ...params, webhookBurst: 0 })).toThrow(/webhookBurst/);
});

test('a template placeholder without a value, or a value without a placeholder, is an error', () => {
  expect(() => fillTemplate('listen {{port}};', {})).toThrow(/\{\{port\}\}/);
  expect(() => fillTemplate('listen 80;', { port: '80' })).toThrow(/port/);
  expect(fillTemplate('listen {{port}};', { port: '80' })).toBe('listen 80;');
});

test('the event stream location is unbuffered and stays open for an hour of silence', () => {
  const config = renderNginxConfig(params);
  const stream = /location = \/api\/v1\/billing\/credits\/stream \{([^}]*)\}/.exec(config)?.[1] ?? '';
  expect(stream).toContain('proxy_buffering off;');
  expect(stream).toContain('proxy_read_timeout 1h;');
  expect(stream).toContain('proxy_send_timeout 1h;');
});

test('no query string reaches the access log', () => {
  const format = /log_format billing ([^;]*);/.exec(renderNginxConfig(params))?.[1] ?? '';
  expect(format).toContain('$uri');
  expect(format).not.toMatch(/\$request\b|\$request_uri|\$args|\$query_string/);
});
