/** Applies the Stripe events this deployment missed: see `usage`. */
import { SingleBar, Presets } from 'cli-progress';
import { loadCatalog } from '../service/credits/catalog';
import { ConfigError, loadConfig } from '../service/config';
import { connectDatabase, describeError } from '../service/db';
import { createLogger } from '../service/logger';
import { recoverMissedEvents } from '../service/recovery';
import { createStripeClient, stripeReaders } from '../service/stripeApi';
import { BalanceChanges } from '../service/users/balanceChanges';
import { parseCommandLine, parseDurationSeconds } from './lib/cli';

const usage = `
Usage: npm run recover-events -- [--since 3d|72h|2026-11-01T00:00:00Z] [--dry-run]
       (in the container: node dist/scripts/recover-missed-events.js …)

Applies every handled Stripe event created since the given time that this deployment has not applied yet
(missed deliveries, an outage longer than Stripe's retries, a wrong secret for a while). Safe to repeat:
already-applied events count as duplicates. Needs DATABASE_URL, STRIPE_API_KEY and STRIPE_MODE (or their
*_FILE forms), as the service does.

Options:
  --since WHEN   how far back: a duration (72h, 3d) or an ISO date; Stripe keeps 30 days (default 3d)
  --dry-run      list what would be applied, change nothing
  -h, --help     show this text
`;

const maxLookbackSeconds = 30 * 24 * 3600;

export function parseSince(value: string, nowSeconds: number): number {
  const ago = parseDurationSeconds(value);
  const seconds = ago !== undefined ? nowSeconds - ago : Date.parse(value) / 1000;
  if (!Number.isFinite(seconds)) throw new Error(`--since must look like 72h, 3d or an ISO date, got "${value}"`);
  if (seconds < nowSeconds - maxLookbackSeconds) console.error('note: Stripe lists events of the last 30 days only; older ones cannot be recovered.');
  return Math.floor(seconds);
}

async function main(): Promise<number> {
  const cli = parseCommandLine({ usage, options: { since: { type: 'string', default: '3d' }, 'dry-run': { type: 'boolean', default: false } } });
  const { values } = cli;
  let sinceSeconds: number;
  try {
    sinceSeconds = parseSince(values.since, Math.floor(Date.now() / 1000));
  } catch (error) {
    return cli.fail((error as Error).message);
  }
  const config = loadConfig(process.env);
  if (!config.databaseUrl) throw new ConfigError('Set DATABASE_URL (or DATABASE_URL_FILE) to the database the service uses.');
  if (!config.stripeApiKey) throw new ConfigError('Set STRIPE_API_KEY (or STRIPE_API_KEY_FILE): events are read from the Stripe API.');

  const logger = createLogger('warn');
  const db = connectDatabase({ connectionString: config.databaseUrl, passwordFile: config.databasePasswordFile, poolMax: 2, logger });
  const stripe = createStripeClient(config.stripeApiKey, config.stripeApiBase);
  // The replicas' open balance streams hear of what this run credits, as they would from the webhook.
  const balanceChanges = new BalanceChanges(db, logger);
  const failures: string[] = [];
  const progress = new SingleBar({ format: 'recovering {bar} {value}/{total} events | {outcome}', stream: process.stderr }, Presets.shades_classic);
  try {
    const summary = await recoverMissedEvents({
      db,
      stripe,
      stripeMode: config.stripeMode,
      eventContext: { catalog: loadCatalog(config.creditCatalogFile), ...stripeReaders(stripe) },
      sinceSeconds,
      dryRun: values['dry-run'],
      onListed: (count) => {
        console.error(`${count} handled ${config.stripeMode}-mode events since ${new Date(sinceSeconds * 1000).toISOString()}`);
        if (!values['dry-run'] && count > 0) progress.start(count, 0, { outcome: '' });
      },
      onApplied: (event, outcome, reason) => {
        if (outcome === 'failed') failures.push(`${event.id} (${event.type}): ${reason}`);
        progress.increment({ outcome: `${event.id} ${outcome}` });
      },
      onBalanceChanged: (userId) => balanceChanges.changed(userId),
    });
    progress.stop();
    console.table(summary);
    for (const failure of failures) console.error(`failed: ${failure}`);
    if (summary.failed > 0) console.error('Some events failed (reasons above, also in stripe_events.error): fix the cause and run again.');
    return summary.failed > 0 ? 1 : 0;
  } finally {
    progress.stop();
    await balanceChanges.flush();
    await db.close();
  }
}

if (require.main === module) {
  main().then(
    (code) => process.exit(code),
    (error: unknown) => {
      console.error(error instanceof ConfigError ? `Configuration error: ${error.message}` : `Recovery failed: ${describeError(error).message}`);
      process.exit(1);
    },
  );
}
