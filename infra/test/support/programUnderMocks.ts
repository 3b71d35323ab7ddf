import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type * as Pulumi from '@pulumi/pulumi';

/**
 * Runs infra/index.ts against Pulumi's mock engine (no CLI, no Docker, no Stripe) and records every
 * resource registration with its inputs as the engine receives them: secrets arrive wrapped.
 */

export const project = 'stripe-credits';
export const endpointType = 'pulumi-nodejs:dynamic/stripe:WebhookEndpoint';
export const mockCreatedSecret = 'whsec_mockSecretReturnedOnCreate';
/** The ID the mocked build of the service image gets (its repoDigest). */
export const mockImageId = `sha256:${'a'.repeat(64)}`;

/** Values that must never appear outside a secret. */
export const secretValues = {
  testKey: 'sk_test_mockKeyForTheTestStack',
  liveKey: 'sk_live_mockKeyForTheLiveStack',
  postgresPassword: 'pg-password-Never-Plain',
  jwtSecret: 'jwt-secret-Never-Plain-0123456789abcdef',
  serviceApiToken: 'service-api-token-Never-Plain-0123456789',
  tlsKeyMaterial: 'TLSKEYMATERIALneverplain',
  suppliedSecret: 'whsec_suppliedFromConfig',
  serviceTestKey: 'rk_test_mockRestrictedKeyOfTheService',
  serviceLiveKey: 'rk_live_mockRestrictedKeyOfTheService',
  databaseUrl: 'postgres://app:external-Never-Plain@db.example.com:5432/credits',
  createdSecret: mockCreatedSecret,
};

const secretSig = '4dabf18193072939515e22adb298388d';
const secretMarker = '1b47061264138c4ac30d75fd1eb44270';

export interface Registration {
  type: string;
  name: string;
  inputs: Record<string, unknown>;
  /** The resource options as the engine receives them (the mock's `newResource` is not told these). */
  options: RegistrationOptions;
}

export interface RegistrationOptions {
  /** Names of the resources this one waits for: dependsOn and every resource whose output it takes. */
  dependsOn: string[];
  protect: boolean;
  deleteBeforeReplace: boolean;
  retainOnDelete: boolean;
  /** A value whose change replaces the resource (secrets arrive wrapped, as in inputs). */
  replacementTrigger: unknown;
  additionalSecretOutputs: string[];
}

/** The parts of the engine's RegisterResourceRequest read here. */
interface RegisterResourceRequest {
  getType(): string;
  getName(): string;
  getDependenciesList(): string[];
  getProtect(): boolean;
  getDeletebeforereplace(): boolean;
  getRetainondelete(): boolean;
  getReplacementTrigger(): { toJavaScript(): unknown } | undefined;
  getAdditionalsecretoutputsList(): string[];
}

export interface ProgramRun {
  registrations: Registration[];
  /** Names of the stack outputs. */
  exportNames: string[];
  /** A stack output's value. */
  output(name: string): Promise<unknown>;
  /** Whether a stack output is a secret. */
  isSecret(name: string): Promise<boolean>;
  byType(type: string): Registration[];
  one(type: string, name: string): Registration;
}

export type StackName = 'test' | 'live';

let tlsDir: string | undefined;
function tlsFiles(): { certificate: string; key: string } {
  tlsDir ??= mkdtempSync(path.join(os.tmpdir(), 'infra-mock-tls-'));
  const certificate = path.join(tlsDir, 'tls.crt');
  const key = path.join(tlsDir, 'tls.key');
  writeFileSync(certificate, '-----BEGIN CERTIFICATE-----\nMIIBcertificate\n-----END CERTIFICATE-----\n');
  writeFileSync(key, `-----BEGIN PRIVATE KEY-----\n${secretValues.tlsKeyMaterial}\n-----END PRIVATE KEY-----\n`);
  return { certificate, key };
}

/** A complete stack configuration; `null` in overrides removes a key. */
export function stackConfig(stack: StackName, overrides: Record<string, string | null> = {}): { values: Record<string, string>; secretKeys: string[] } {
  const tls = tlsFiles();
  const plain: Record<string, string> = {
    stripeMode: stack,
    domain: stack === 'live' ? 'billing.example.com' : 'billing-test.example.com',
    tlsCertificateFile: tls.certificate,
    tlsKeyFile: tls.key,
  };
  // Every secret key is set in every stack (Pulumi.yaml declares them secret, without a default): "" when unused.
  const secrets: Record<string, string> = {
    stripeApiKey: stack === 'live' ? secretValues.liveKey : secretValues.testKey,
    serviceStripeApiKey: '',
    postgresPassword: secretValues.postgresPassword,
    authJwtSecret: secretValues.jwtSecret,
    serviceApiToken: secretValues.serviceApiToken,
    databaseUrl: '',
    stripeWebhookSecret: '',
  };
  const secretKeyNames = new Set(Object.keys(secrets));
  const merged: Record<string, string | null> = { ...plain, ...secrets, ...overrides };
  const values: Record<string, string> = {};
  for (const [key, value] of Object.entries(merged)) if (value !== null) values[`${project}:${key}`] = value;
  const secretKeys = Object.keys(values).filter((key) => secretKeyNames.has(key.slice(project.length + 1)));
  return { values, secretKeys };
}

/** What each provider would answer, as far as the program reads it. */
function mockState(type: string, name: string, inputs: Record<string, unknown>): { id: string; state: Record<string, unknown> } {
  switch (type) {
    case endpointType: {
      // As the provider does on create: an adopted endpoint signs with the supplied secret, a new one with its own.
      const supplied = String(unwrap(inputs.suppliedSecret) ?? '');
      const adopted = typeof inputs.adoptId === 'string' && inputs.adoptId !== '';
      const id = adopted ? (inputs.adoptId as string) : 'we_mockCreatedEndpoint';
      const secret = adopted ? supplied : mockCreatedSecret;
      const signingSecrets = supplied && supplied !== secret ? [secret, supplied] : [secret];
      return { id, state: { ...inputs, secret, suppliedSecretFor: adopted ? id : '', signingSecrets, livemode: inputs.mode === 'live', status: 'enabled' } };
    }
    case 'docker:index/image:Image':
      return { id: 'image-id', state: { ...inputs, repoDigest: mockImageId } };
    case 'docker:index/remoteImage:RemoteImage':
      return { id: 'remote-image-id', state: { ...inputs, imageId: `sha256:${'b'.repeat(64)}` } };
    case 'docker:index/container:Container': {
      const containerName = typeof inputs.name === 'string' ? inputs.name : `${name}-docker-named`; // as Docker names it
      return { id: `container-${containerName}`, state: { ...inputs, name: containerName, exitCode: 0 } };
    }
    default:
      return { id: `${type}-id`, state: { ...inputs } };
  }
}

/** Loads the program afresh (its own module registry) for one stack configuration. */
export async function runProgram(stack: StackName, overrides: Record<string, string | null> = {}): Promise<ProgramRun> {
  jest.resetModules();
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const pulumi = require('@pulumi/pulumi') as typeof Pulumi;
  const registrations: Registration[] = [];
  const optionsByResource = new Map<string, RegistrationOptions>();
  await pulumi.runtime.setMocks(
    {
      newResource(args) {
        const options = optionsByResource.get(`${args.type}::${args.name}`);
        if (!options) throw new Error(`no resource options recorded for ${args.type} ${args.name}`);
        registrations.push({ type: args.type, name: args.name, inputs: args.inputs as Record<string, unknown>, options });
        return mockState(args.type, args.name, args.inputs as Record<string, unknown>);
      },
      call: (args) => args.inputs,
    },
    project,
    stack,
    false,
  );
  // The mock monitor passes only type, name and inputs on: read the options from the request itself.
  const monitor = pulumi.runtime.getMonitor() as unknown as { registerResource(req: RegisterResourceRequest, callback: unknown): unknown };
  const registerResource = monitor.registerResource.bind(monitor);
  monitor.registerResource = (req, callback) => {
    optionsByResource.set(`${req.getType()}::${req.getName()}`, {
      dependsOn: req.getDependenciesList().map((urn) => urn.split('::').pop() as string),
      protect: req.getProtect(),
      deleteBeforeReplace: req.getDeletebeforereplace(),
      retainOnDelete: req.getRetainondelete(),
      replacementTrigger: req.getReplacementTrigger()?.toJavaScript(),
      additionalSecretOutputs: req.getAdditionalsecretoutputsList(),
    });
    return registerResource(req, callback);
  };
  const { values, secretKeys } = stackConfig(stack, overrides);
  pulumi.runtime.setAllConfig(values, secretKeys);

  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const exports = require('../../index') as Record<string, unknown>;
  const output = (name: string) => {
    if (!(name in exports)) throw new Error(`the program exports no ${name}`);
    return pulumi.output(exports[name]);
  };
  // The exports depend (through nginx, the replicas and the endpoint) on every resource, so once
  // they resolve every registration has happened.
  await Promise.all(Object.keys(exports).map((name) => promiseOf(output(name))));

  const byType = (type: string) => registrations.filter((registration) => registration.type === type);
  return {
    registrations,
    exportNames: Object.keys(exports),
    output: (name) => promiseOf(output(name)),
    isSecret: (name) => pulumi.isSecret(output(name)),
    byType,
    one(type, name) {
      const found = byType(type).filter((registration) => registration.name === name);
      if (found.length !== 1) throw new Error(`expected one ${type} named ${name}, found ${found.length}`);
      return found[0] as Registration;
    },
  };
}

function promiseOf<T>(output: Pulumi.Output<T>): Promise<T> {
  return new Promise((resolve) => output.apply((value) => resolve(value)));
}

export function isSecretInput(value: unknown): value is { value: unknown } {
  return typeof value === 'object' && value !== null && (value as Record<string, unknown>)[secretSig] === secretMarker;
}

export function unwrap(value: unknown): unknown {
  return isSecretInput(value) ? value.value : value;
}

/** Every string in `value` that is not inside a secret, with its path. */
export function plainStrings(value: unknown, at = ''): Array<{ path: string; text: string }> {
  if (isSecretInput(value)) return [];
  if (typeof value === 'string') return [{ path: at, text: value }];
  if (Array.isArray(value)) return value.flatMap((item, index) => plainStrings(item, `${at}[${index}]`));
  if (typeof value === 'object' && value !== null) {
    return Object.entries(value).flatMap(([key, item]) => plainStrings(item, at ? `${at}.${key}` : key));
  }
  return [];
}
