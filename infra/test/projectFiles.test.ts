import { readFileSync } from 'node:fs';
import path from 'node:path';
import { configDefaults } from '../config';
import { healthcheck as rolloutHealthcheck } from '../rollout';
import { serviceHealthcheck, servicePort } from '../serviceImage';
import { readDockerfile } from './support/dockerfile';

const root = path.resolve(__dirname, '..', '..');
const read = (file: string) => readFileSync(path.join(root, file), 'utf8');

interface DeclaredKey {
  type: string;
  description: string;
  default?: string;
  secret: boolean;
}

/** The `config:` block of Pulumi.yaml (two-space keys, four-space attributes, `>-` descriptions). */
function declaredConfig(): Record<string, DeclaredKey> {
  const lines = read('Pulumi.yaml').split('\n');
  const start = lines.indexOf('config:');
  const keys: Record<string, DeclaredKey> = {};
  let current: DeclaredKey | undefined;
  let inDescription = false;
  for (const line of lines.slice(start + 1)) {
    const key = /^ {2}(\w+):$/.exec(line);
    const attribute = /^ {4}(\w+): ?(.*)$/.exec(line);
    if (key?.[1]) {
      current = { type: '', description: '', secret: false };
      keys[key[1]] = current;
      inDescription = false;
    } else if (attribute && current) {
      const [, name, raw = ''] = attribute;
      const value = raw.replace(/^"(.*)"$/, '$1');
      inDescription = name === 'description' && raw === '>-';
      if (name === 'type') current.type = value;
      if (name === 'description' && !inDescription) current.description = value;
      if (name === 'default') current.default = value;
      if (name === 'secret') current.secret = value === 'true';
    } else if (inDescription && current && /^ {6}\S/.test(line)) {
      current.description += `${line.trim()} `;
    }
  }
  return keys;
}

describe('Pulumi.yaml', () => {
  const declared = declaredConfig();
  const configSource = read('infra/config.ts');
  const readKeys = [
    ...configSource.matchAll(/\b(?:config\.(?:require|get|getBoolean|getNumber)|text|integer|hostDirectory|image|getSecret|requireSecret|readLocalFile)\('(\w+)'/g),
  ].map((match) => match[1]);

  test('declares every key the program reads, each with a type and a description', () => {
    expect(new Set(readKeys)).toEqual(new Set(Object.keys(declared)));
    for (const [key, declaration] of Object.entries(declared)) {
      expect({ key, type: declaration.type }).toEqual({ key, type: expect.stringMatching(/^(string|integer|boolean)$/) });
      expect({ key, long: declaration.description.length > 20 }).toEqual({ key, long: true });
    }
  });

  test('declares the program’s defaults, and no default only for the required keys', () => {
    for (const [key, value] of Object.entries(configDefaults)) expect({ key, default: declared[key]?.default }).toEqual({ key, default: String(value) });
    const required = Object.entries(declared).filter(([, declaration]) => declaration.default === undefined && !declaration.secret).map(([key]) => key);
    expect(required.sort()).toEqual(['domain', 'stripeMode', 'tlsCertificateFile', 'tlsKeyFile']);
  });

  test('every key the program reads as a secret is declared secret: true, with no default (a plain one Pulumi refuses), and no other key is', () => {
    const readAsSecret = [...configSource.matchAll(/\b(?:getSecret|requireSecret)\('(\w+)'/g)].map((match) => match[1]);
    const declaredSecret = Object.entries(declared).filter(([, declaration]) => declaration.secret).map(([key]) => key);
    expect(new Set(readAsSecret)).toEqual(new Set(declaredSecret));
    expect(declaredSecret.sort()).toEqual(['authJwtSecret', 'databaseUrl', 'postgresPassword', 'serviceApiToken', 'serviceStripeApiKey', 'stripeApiKey', 'stripeWebhookSecret']);
    for (const key of declaredSecret) expect({ key, default: declared[key]?.default }).toEqual({ key, default: undefined });
    // A key read in plain text is never one that holds a password, key or token; the only URLs read in plain
    // text are public addresses: the product's key set and pages.
    const publicUrls = ['authJwksUrl', 'billingSuccessUrl', 'billingCancelUrl'];
    const readPlain = readKeys.filter((key) => !readAsSecret.includes(key) && !publicUrls.includes(key as string));
    expect(readPlain.filter((key) => /(key|secret|password|token|url)$/i.test(key as string))).toEqual([]);
  });

  test('runs the program from infra/ with tsx instead of the built-in ts-node', () => {
    const project = read('Pulumi.yaml');
    expect(project).toMatch(/^main: infra\/$/m);
    expect(project).toMatch(/^ {4}typescript: false$/m);
    expect(project).toMatch(/^ {4}nodeargs: --import tsx$/m);
  });

  test.each(['test', 'live'])('the example %s stack sets its mode and holds no secret', (stack) => {
    const file = read(`Pulumi.${stack}.yaml`);
    expect(file).toContain(`stripe-credits:stripeMode: ${stack}`);
    expect(file).not.toMatch(/secure:|sk_|rk_|whsec_|PRIVATE KEY|postgres:\/\//);
  });
});

describe('Dockerfile', () => {
  const { text: dockerfile, preamble, stages } = readDockerfile(root);
  const instructions = [...preamble, ...stages.flatMap((stage) => stage.instructions)];

  test('builds in stages on Node 24 LTS and ships production dependencies only', () => {
    expect(dockerfile).toMatch(/^ARG NODE_IMAGE=node:24-bookworm-slim$/m);
    expect(stages.map((stage) => stage.instructions[0])).toEqual([
      'FROM ${NODE_IMAGE} AS build',
      'FROM ${NODE_IMAGE} AS prod-deps',
      'FROM ${NODE_IMAGE} AS runtime',
    ]);
    expect(dockerfile).toMatch(/^RUN npm ci --omit=dev /m);
    expect(dockerfile).toContain('COPY --from=prod-deps /app/node_modules ./node_modules');
    expect(dockerfile).not.toMatch(/COPY --from=build \/build\/node_modules/);
  });

  test('runs as the non-root node user under tini, with the health check and port the program uses', () => {
    const runtime = stages.find((stage) => stage.name === 'runtime')?.instructions ?? [];
    expect(runtime).toContain('USER node');
    expect(runtime).toContain('ENTRYPOINT ["/usr/bin/tini", "--"]');
    expect(runtime).toContain('CMD ["node", "--max-semi-space-size=8", "dist/service/main.js"]');
    expect(runtime).toContain(`EXPOSE ${servicePort}`);
    const healthcheck = runtime.find((line) => line.startsWith('HEALTHCHECK '));
    expect(JSON.parse(healthcheck?.replace(/^HEALTHCHECK .*? CMD /, '') ?? 'null')).toEqual(serviceHealthcheck.slice(1));
    const timing = rolloutHealthcheck;
    expect(healthcheck).toContain(
      `--interval=${timing.intervalSeconds}s --timeout=${timing.timeoutSeconds}s --start-period=${timing.startPeriodSeconds}s --retries=${timing.retries}`,
    );
  });

  test('has no secret in any layer: no secret-like ARG or ENV, and a build context without secret files', () => {
    const settings = instructions.filter((line) => /^(ARG|ENV) /.test(line)).join('\n');
    expect(settings).not.toMatch(/KEY|SECRET|PASSWORD|TOKEN|DATABASE_URL/i);
    const ignore = read('.dockerignore').split('\n');
    expect(ignore.find((line) => line && !line.startsWith('#'))).toBe('*'); // only what is re-included below
    expect(ignore).toEqual(expect.arrayContaining(['**/secrets/', '**/*.key', '**/*.pem', '**/.env*']));
    expect(ignore.filter((line) => line.startsWith('!'))).toEqual(['!package.json', '!package-lock.json', '!tsconfig.json', '!tsconfig.build.json', '!service', '!scripts', '!localStripe']);
  });
});
