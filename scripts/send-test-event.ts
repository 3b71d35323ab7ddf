/** Sends one realistic, signed Stripe event to a running service and shows the balance it changed: see `usage`. */
import { readFile } from 'node:fs/promises';
import { signedDelivery } from '../localStripe/signing';
import { readCreditsView, type CreditsView } from '../service/billing/creditsView';
import { ConfigError, loadConfig, type Config } from '../service/config';
import { connectDatabase } from '../service/db';
import { devWebhookSecretPath, sessionKey } from '../service/devSecret';
import { createLogger } from '../service/logger';
import { canSign, signSessionToken } from '../service/users/sessionTokens';
import { webhookPath } from '../service/webhook/route';
import { parseSecrets } from '../service/webhook/secretStore';
import { parseCommandLine, wholeNumberOption } from './lib/cli';
import { buildTestEvent, isTestEventKind, testEventKinds } from './lib/testEvents';

const usage = `
Usage: npm run send-test-event -- [--type paid] [--user user_demo] [--credits 100] [--url http://127.0.0.1:3000]

Sends a realistic Stripe event to a running service, signed as Stripe signs it (in place of the Dashboard's
"Send test webhook"), and prints the user's balance before and after.

Types (--type):
  paid                   checkout.session.completed, paid by card: grants --credits
  unpaid                 checkout.session.completed with a delayed payment method: pending
  async-succeeded        checkout.session.async_payment_succeeded: grants the pending purchase (--session)
  async-failed           checkout.session.async_payment_failed: the pending purchase fails (--session)
  subscription-created   customer.subscription.created: the user's plan of --credits a month
  subscription-updated   customer.subscription.updated: the plan now grants --credits a month
  subscription-deleted   customer.subscription.deleted: the subscription ends, its credits expire
  invoice-paid           invoice.paid for the user's subscription: grants the month's credits
  refund                 charge.refunded in full, for the purchase paid by --payment-intent
  dispute                charge.dispute.created, for the purchase paid by --payment-intent
Types the service does not act on are answered 200 "ignored", and this says so.

Options:
  --type TYPE            one of the types above (default paid)
  --user ID              the user (client_reference_id, or the subscription's metadata.user_id; default user_demo)
  --credits N            credits of the purchase, or per month of the plan (default 100)
  --session ID           the Checkout session an async payment settles (printed by --type unpaid)
  --payment-intent ID    the payment a refund or dispute is about (printed by --type paid)
  --url URL              the service (default http://127.0.0.1:$PORT, PORT default 3000)
  --live                 a live-mode event (default: the mode of STRIPE_MODE)
  -h, --help             show this text

Signs with the first secret of STRIPE_WEBHOOK_SECRET(_FILE), else the development secret \`npm start\` keeps
in .data/webhook-secret. Reads the balance from the service's GET /api/v1/billing/credits with a session
token signed as \`npm run make-token\` signs it (AUTH_JWT_SECRET(_FILE), else the development key in
.data/auth-jwt-secret), else straight from DATABASE_URL(_FILE).
`;

const sessionTokenTtlSeconds = 60;
const requestTimeoutMillis = 15_000;

class ServiceUnreachable extends Error {}

function readCommandLine() {
  const cli = parseCommandLine({
    usage,
    options: {
      type: { type: 'string', default: 'paid' },
      user: { type: 'string', default: 'user_demo' },
      credits: { type: 'string', default: '100' },
      session: { type: 'string' },
      'payment-intent': { type: 'string' },
      url: { type: 'string' },
      live: { type: 'boolean', default: false },
    },
  });
  const { type, user } = cli.values;
  if (!isTestEventKind(type)) return cli.fail(`--type must be one of ${Object.keys(testEventKinds).join(', ')}; got "${type}"`);
  if (!user.trim()) cli.fail('--user must not be empty');
  return { ...cli.values, type, user: user.trim(), credits: wholeNumberOption(cli, '--credits', cli.values.credits, 1) };
}

async function signingSecret(config: Config): Promise<string> {
  const source = config.webhookSecret;
  if (source?.kind === 'value') return source.value;
  const file = source?.kind === 'file' ? source.path : devWebhookSecretPath(config.dataDir);
  const content = await readFile(file, 'utf8').catch(() => {
    throw new Error(`No webhook secret at ${file}: start the service once with \`npm start\`, or set STRIPE_WEBHOOK_SECRET_FILE.`);
  });
  return parseSecrets(content, file)[0]!.value;
}

async function callService(baseUrl: URL, route: string, init: RequestInit = {}): Promise<Response> {
  try {
    return await fetch(new URL(route, baseUrl), { ...init, signal: AbortSignal.timeout(requestTimeoutMillis) });
  } catch {
    throw new ServiceUnreachable(`cannot reach ${baseUrl.origin} — is \`npm start\` running?`);
  }
}

type BalanceReader = () => Promise<CreditsView>;

/** Where this script can read the user's balance: the service's own route, else the database; or why it cannot. */
async function balanceReader(config: Config, baseUrl: URL, userId: string): Promise<{ read?: BalanceReader; why?: string; close(): Promise<void> }> {
  const key = await sessionKey(config);
  let routeProblem = key ? 'AUTH_JWKS_URL is set: only the product’s sign-in can sign a session token' : 'NODE_ENV=production and no AUTH_JWT_SECRET to sign a session token with';
  if (key && canSign(key.tokens)) {
    const token = await signSessionToken(key.tokens, userId, sessionTokenTtlSeconds);
    const read = async () => {
      const response = await callService(baseUrl, '/api/v1/billing/credits', { headers: { authorization: `Bearer ${token}` } });
      if (!response.ok) throw new Error(`GET /api/v1/billing/credits answered ${response.status}`);
      return (await response.json()) as CreditsView;
    };
    try {
      await read();
      return { read, close: async () => undefined };
    } catch (error) {
      if (error instanceof ServiceUnreachable) throw error;
      routeProblem = `${(error as Error).message} (the service's AUTH_JWT_SECRET is not this one, or its user routes are off)`;
    }
  }
  if (config.databaseUrl) {
    const db = connectDatabase({ connectionString: config.databaseUrl, poolMax: 1, logger: createLogger('silent') });
    return { read: () => readCreditsView(db, userId), close: () => db.close() };
  }
  return { why: `${routeProblem}, and no DATABASE_URL to read it from`, close: async () => undefined };
}

function describe(balance: CreditsView): string {
  return `${balance.total_credits} credits (${balance.purchased_credits_balance} purchased, ${balance.credits_remaining} subscription)`;
}

async function main(): Promise<void> {
  const cli = readCommandLine();
  const config = loadConfig(process.env);
  const baseUrl = new URL(cli.url ?? `http://127.0.0.1:${process.env.PORT || 3000}`);
  const secret = await signingSecret(config);
  const { event, followUp } = buildTestEvent(cli.type, {
    userId: cli.user,
    credits: cli.credits,
    livemode: cli.live || config.stripeMode === 'live',
    sessionId: cli.session,
    paymentIntent: cli['payment-intent'],
  });

  const balance = await balanceReader(config, baseUrl, cli.user);
  try {
    const show = async (when: string) => {
      if (balance.read) console.log(`${when}: ${cli.user} has ${describe(await balance.read())}`);
    };
    if (!balance.read) console.log(`balance of ${cli.user} not shown: ${balance.why}`);
    await show('before');

    const delivery = signedDelivery(event, [secret]);
    const response = await callService(baseUrl, webhookPath, { method: 'POST', headers: delivery.headers, body: delivery.body });
    const text = await response.text();
    const answer = (() => {
      try {
        return JSON.parse(text) as { status?: string; message?: string; error?: string };
      } catch {
        return { message: text.trim() };
      }
    })();
    console.log(`sent ${event.type} ${event.id} (${event.livemode ? 'live' : 'test'} mode) to ${new URL(webhookPath, baseUrl).toString()}`);
    if (response.status !== 200) {
      console.log(`not applied (HTTP ${response.status}: ${answer.message ?? answer.error ?? 'no reason given'})`);
      process.exitCode = 1;
      return;
    }
    const outcomes: Record<string, string> = {
      processed: 'applied (processed)',
      duplicate: 'already applied before (duplicate)',
      ignored: `ignored: the service does not act on ${event.type} events (answered 200 "ignored")`,
      unmatched: 'not applied: the service could not attribute it (answered 200 "unmatched"; its log and stripe_events.error say why)',
    };
    console.log(outcomes[answer.status ?? ''] ?? `answered 200 ${text.trim()}`);
    await show('after');
    if (followUp && answer.status === 'processed') console.log(`next: ${followUp}`);
  } finally {
    await balance.close();
  }
}

main().catch((error: unknown) => {
  if (error instanceof ServiceUnreachable) console.error(error.message);
  else if (error instanceof ConfigError) console.error(`Configuration error: ${error.message}`);
  else console.error(`send-test-event failed: ${(error as Error).message}`);
  process.exit(1);
});
