/**
 * Usage: npm run send-test-event -- [--user user_demo] [--credits 100] [--url http://127.0.0.1:3000]
 *
 * Sends a realistic, signed `checkout.session.completed` to a running service, the way Stripe would
 * (replaces the Dashboard's "Send test webhook"). Signs with the first secret of STRIPE_WEBHOOK_SECRET(_FILE),
 * or with the development secret `npm start` generated in .data/.
 */
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import Stripe from 'stripe';
import { loadConfig } from '../service/config';
import { parseSecrets } from '../service/webhook/secretStore';
import { webhookPath } from '../service/webhook/route';

async function signingSecret(): Promise<string> {
  const config = loadConfig(process.env);
  const source = config.webhookSecret;
  if (source?.kind === 'value') return source.value;
  const file = source?.kind === 'file' ? source.path : path.join(config.dataDir, 'webhook-secret');
  const content = await readFile(file, 'utf8').catch(() => {
    throw new Error(`No webhook secret at ${file}: start the service once with \`npm start\`, or set STRIPE_WEBHOOK_SECRET_FILE.`);
  });
  return parseSecrets(content, file)[0]!.value;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      user: { type: 'string', default: 'user_demo' },
      credits: { type: 'string', default: '100' },
      url: { type: 'string', default: `http://127.0.0.1:${process.env.PORT ?? 3000}` },
      live: { type: 'boolean', default: false },
    },
  });
  const nowSeconds = Math.floor(Date.now() / 1000);
  const id = (prefix: string) => `${prefix}_${randomBytes(12).toString('hex')}`;
  const livemode = values.live || process.env.STRIPE_MODE === 'live';
  const event = {
    id: id('evt'),
    object: 'event',
    api_version: '2025-03-31.basil',
    created: nowSeconds,
    livemode,
    pending_webhooks: 1,
    request: { id: null, idempotency_key: null },
    type: 'checkout.session.completed',
    data: {
      object: {
        id: id(livemode ? 'cs_live' : 'cs_test'),
        object: 'checkout.session',
        mode: 'payment',
        status: 'complete',
        payment_status: 'paid',
        client_reference_id: values.user,
        metadata: { credits: values.credits },
        amount_total: 1000,
        currency: 'usd',
        payment_intent: id('pi'),
        customer: null,
        subscription: null,
        livemode,
        created: nowSeconds,
      },
    },
  };
  const payload = JSON.stringify(event, null, 2);
  const header = Stripe.webhooks.generateTestHeaderString({ payload, secret: await signingSecret(), timestamp: nowSeconds });
  const target = new URL(webhookPath, values.url);
  const response = await fetch(target, { method: 'POST', headers: { 'content-type': 'application/json', 'stripe-signature': header }, body: payload });
  console.log(`${response.status} ${await response.text()}`);
  console.log(`sent ${event.id} (${values.credits} credits for ${values.user}) to ${target.toString()}`);
  if (!response.ok) process.exitCode = 1;
}

main().catch((error: unknown) => {
  console.error((error as Error).message);
  process.exit(1);
});
