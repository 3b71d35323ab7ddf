/**
 * Loads infra/ the way `pulumi up` does (Pulumi.yaml: `node --import tsx`, require of the main
 * folder), against Pulumi's mock engine, with the dynamic provider serialized for real. Prints a JSON
 * summary. Usage: node --import tsx infra/test/support/loadProgramUnderTsx.ts <config.json>
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import * as pulumi from '@pulumi/pulumi';

interface Input {
  stack: string;
  values: Record<string, string>;
  secretKeys: string[];
}

async function main(): Promise<void> {
  const input = JSON.parse(readFileSync(process.argv[2] as string, 'utf8')) as Input;
  const types: string[] = [];
  const serializedProviders: string[] = [];
  await pulumi.runtime.setMocks(
    {
      newResource(args) {
        types.push(args.type);
        if (args.type.startsWith('pulumi-nodejs:dynamic')) serializedProviders.push(String(args.inputs.__provider));
        const outputs = {
          secret: 'whsec_fromMockStripe',
          signingSecrets: ['whsec_fromMockStripe'],
          suppliedSecretFor: '',
          exitCode: 0,
          repoDigest: 'sha256:aa',
          imageId: 'sha256:bb',
        };
        return { id: `${args.name}-id`, state: { ...args.inputs, ...outputs } };
      },
      call: (args) => args.inputs,
    },
    'stripe-credits',
    input.stack,
    false,
  );
  pulumi.runtime.setAllConfig(input.values, input.secretKeys);

  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const program = require(`${path.resolve(__dirname, '..', '..')}/`) as Record<string, unknown>;
  const outputs = await Promise.all(Object.values(program).map((value) => new Promise((resolve) => (pulumi.output(value) as pulumi.Output<unknown>).apply(resolve))));
  process.stdout.write(JSON.stringify({ types, serializedProviders, outputs }));
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
