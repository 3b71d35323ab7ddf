/** What a deployed stack reports about itself (infra/index.ts exports), from Pulumi or from a file. */
import { readFile } from 'node:fs/promises';
import { ConfigError, type StripeMode } from '../../service/config';
import type { CommandRunner } from './commandRunner';

export interface StackOutputs {
  mode?: StripeMode;
  webhookUrl?: string;
  webhookEndpointId?: string;
  /** The fingerprint of the endpoint's signing secret that the deployment wrote into the secret file. */
  webhookSecretFingerprint?: string;
  nginxContainer?: string;
  serviceContainers?: string[];
}

export function parseStackOutputs(text: string, source: string): StackOutputs {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new ConfigError(`${source} is not JSON: give the output of \`pulumi stack output --json\`.`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new ConfigError(`${source} is not a JSON object of stack outputs.`);
  const outputs = raw as Record<string, unknown>;
  const text_ = (name: string): string | undefined => {
    const value = outputs[name];
    if (value === undefined || value === null) return undefined;
    if (typeof value !== 'string') throw new ConfigError(`${source}: output ${name} must be a string.`);
    return value;
  };
  const mode = text_('mode');
  if (mode !== undefined && mode !== 'test' && mode !== 'live') throw new ConfigError(`${source}: output mode must be "test" or "live", got "${mode}".`);
  const containers = outputs.serviceContainers;
  if (containers !== undefined && !(Array.isArray(containers) && containers.every((name) => typeof name === 'string'))) {
    throw new ConfigError(`${source}: output serviceContainers must be a list of container names.`);
  }
  return {
    mode,
    webhookUrl: text_('webhookUrl'),
    webhookEndpointId: text_('webhookEndpointId'),
    webhookSecretFingerprint: text_('webhookSecretFingerprint'),
    nginxContainer: text_('nginxContainer'),
    serviceContainers: containers as string[] | undefined,
  };
}

export async function readStackOutputsFile(file: string): Promise<StackOutputs> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    throw new ConfigError(`--stack-outputs ${file} cannot be read (${(error as NodeJS.ErrnoException).code ?? 'error'}): save \`pulumi stack output --json\` into it.`);
  }
  return parseStackOutputs(text, `--stack-outputs ${file}`);
}

/** `pulumi stack output --json --stack NAME`: no secret is asked for (the fingerprint is a plain output). */
export async function readStackOutputsFromPulumi(stack: string, run: CommandRunner, pulumiCommand: string): Promise<StackOutputs> {
  const result = await run(pulumiCommand, ['stack', 'output', '--json', '--stack', stack]);
  if (result.code !== 0) {
    throw new ConfigError(
      `\`pulumi stack output --json --stack ${stack}\` failed (${result.stderr.trim().split('\n').pop() ?? `exit ${result.code}`}): ` +
        'run the doctor from the project root, logged in to the stack\'s backend (pulumi login), or save the outputs to a file and pass --stack-outputs FILE.',
    );
  }
  return parseStackOutputs(result.stdout, `the outputs of stack ${stack}`);
}
