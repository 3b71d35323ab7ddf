/**
 * Prints the webhook endpoint provider as Pulumi stores it in the state (`__provider`): the closure
 * serializer's module text. Run under `node --import tsx`, the same loader Pulumi.yaml gives the program.
 */
import * as pulumi from '@pulumi/pulumi';
import { webhookEndpointProvider } from '../../stripeWebhookEndpoint';

// As pulumi.dynamic.Resource does it: a closure over the provider object itself.
const provider = webhookEndpointProvider;
pulumi.runtime
  .serializeFunction(() => provider, { allowSecrets: true })
  .then((serialized) => process.stdout.write(JSON.stringify({ text: serialized.text, containsSecrets: serialized.containsSecrets })))
  .catch((error: unknown) => {
    console.error(error);
    process.exit(1);
  });
