/** Applies the Stripe events this deployment missed, from the stored cursor or a given time: see `usage`. */
import { SingleBar, Presets } from 'cli-progress';
import { loadCatalog } from '../service/credits/catalog';
import { ConfigError, loadConfig } from '../service/config';
import { connectDatabase, describeError, isDatabaseUnavailable } from '../service/db';
import { createLogger } from '../service/logger';
import { defaultBackoff, RateLimitExhaustedError, type BackoffOptions } from '../service/replay/rateLimitBackoff';
import { replayEvents, replayOneEvent, type ReplayCounts, type ReplayOutcome, type ReplaySummary } from '../service/replay/replayEvents';
import { createStripeClient, stripeReaders } from '../service/stripeApi';
import { BalanceChanges } from '../service/users/balanceChanges';
import type { StripeEvent } from '../service/stripe/event';
import { parseCommandLine, parseDurationSeconds } from './lib/cli';

const usage = `
Usage: npm run replay-events -- [--since 3d|72h|2026-11-01T00:00:00Z | --event evt_…] [--dry-run] [--json]
       (in the container: node dist/scripts/replay-events.js …)

Lists Stripe's events of the types the service handles and applies each one this deployment has not
applied yet, through the same code as the webhook (missed deliveries, an outage longer than Stripe's
retries, a wrong secret for a while). Already-applied events count as duplicates; events recorded
\`unmatched\` or \`failed\` are applied again. Safe to repeat, and to run beside the service.

Without --since it starts at the cursor stored in the database (the last event a replay applied with
nothing before it left to retry), or 3 days back when there is none, and moves the cursor as it goes: an
interrupted replay (Ctrl-C, kill -9) resumes there. Stripe lists events of the last 30 days only; it warns
when the start is older than 25 days. Needs DATABASE_URL, STRIPE_API_KEY and STRIPE_MODE (or their
*_FILE forms), as the service does. Waits out Stripe's rate limit (429) with exponential backoff.

Options:
  --since WHEN   start here instead of the cursor: a duration (72h, 3d) or an ISO date
  --event ID     fetch this one event (evt_…) from Stripe and apply it; the cursor does not move
  --dry-run      list what would be applied, change nothing
  --json         print the summary as one JSON object on stdout
  -h, --help     show this text

Exit codes: 0 every event applied (or already applied, or of a type not handled); 1 some event failed,
stayed unmatched or was of the other mode (listed, with the reason; also in stripe_events.error);
2 usage; 69 Stripe or the database unreachable, or Stripe's rate limit never cleared; 75 interrupted
(run again to resume); 78 configuration (a setting, the API key's permissions, an unmigrated database).
`;

export const exitCodes = { applied: 0, notApplied: 1, usage: 2, unavailable: 69, software: 70, interrupted: 75, configuration: 78 } as const;

const defaultLookbackSeconds = 3 * 86_400;

export function parseSince(value: string, nowSeconds: number): number {
  const ago = parseDurationSeconds(value);
  const seconds = ago !== undefined ? nowSeconds - ago : Date.parse(value) / 1000;
  if (!Number.isFinite(seconds)) throw new Error(`--since must look like 72h, 3d or an ISO date, got "${value}"`);
  return Math.floor(seconds);
}

interface NotApplied {
  id: string;
  type: string;
  outcome: ReplayOutcome;
  reason: string | undefined;
}

/** What is wrong, what to do, and the exit code that says which kind of trouble it is. */
export function describeFailure(error: unknown): { message: string; exitCode: number } {
  if (error instanceof ConfigError) return { message: `Configuration error: ${error.message}`, exitCode: exitCodes.configuration };
  if (error instanceof RateLimitExhaustedError) return { message: error.message, exitCode: exitCodes.unavailable };
  const stripeType = (error as { type?: unknown } | undefined)?.type;
  const statusCode = (error as { statusCode?: unknown } | undefined)?.statusCode;
  if (stripeType === 'StripeAuthenticationError' || stripeType === 'StripePermissionError') {
    return { message: `Stripe refused the API key (${describeError(error).message}): give STRIPE_API_KEY read access to Events (and the service's other reads).`, exitCode: exitCodes.configuration };
  }
  if (stripeType === 'StripeConnectionError' || (typeof statusCode === 'number' && statusCode >= 500)) {
    return { message: `Stripe cannot be reached (${describeError(error).message}): check STRIPE_API_BASE and the network, then run again.`, exitCode: exitCodes.unavailable };
  }
  if (stripeType === 'StripeInvalidRequestError' && statusCode === 404) {
    return { message: `Stripe has no such event (${describeError(error).message}): check the id and the key's mode (events are kept 30 days).`, exitCode: exitCodes.notApplied };
  }
  if (isDatabaseUnavailable(error)) {
    return { message: `The database cannot be reached (${describeError(error).message}): check DATABASE_URL and that PostgreSQL runs, then run again; the cursor keeps what was applied.`, exitCode: exitCodes.unavailable };
  }
  if ((error as { code?: unknown } | undefined)?.code === '42P01') {
    return { message: 'The database has no replay_cursor table yet: run `npm run migrate` (or start the service of this version, which migrates), then run again.', exitCode: exitCodes.configuration };
  }
  return { message: `Replay failed unexpectedly: ${describeError(error).message} (please report it with the lines above).`, exitCode: exitCodes.software };
}

/** Loud on purpose: these mean events may soon be beyond Stripe's 30 days of listing. */
function printWarnings(warnings: readonly string[]): void {
  for (const warning of warnings) {
    console.error(`\n${'!'.repeat(100)}\nWARNING: ${warning}\n${'!'.repeat(100)}\n`);
  }
}

async function main(): Promise<number> {
  const cli = parseCommandLine({
    usage,
    options: {
      since: { type: 'string' },
      event: { type: 'string' },
      'dry-run': { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
    },
  });
  const { values } = cli;
  const nowSeconds = Math.floor(Date.now() / 1000);
  let sinceSeconds: number | undefined;
  try {
    sinceSeconds = values.since === undefined ? undefined : parseSince(values.since, nowSeconds);
  } catch (error) {
    return cli.fail((error as Error).message);
  }
  if (values.event !== undefined && values.since !== undefined) cli.fail('--event and --since do not go together: --event replays one event, --since a time range');
  if (values.event !== undefined && !/^evt_\w+$/.test(values.event)) cli.fail(`--event takes a Stripe event id such as evt_1Pq…, got "${values.event}"`);

  const config = loadConfig(process.env);
  if (!config.databaseUrl) throw new ConfigError('Set DATABASE_URL (or DATABASE_URL_FILE) to the database the service uses.');
  if (!config.stripeApiKey) throw new ConfigError('Set STRIPE_API_KEY (or STRIPE_API_KEY_FILE): events are read from the Stripe API.');

  const logger = createLogger('warn');
  const db = connectDatabase({ connectionString: config.databaseUrl, passwordFile: config.databasePasswordFile, poolMax: 2, logger });
  const stripe = createStripeClient(config.stripeApiKey, config.stripeApiBase);
  const eventContext = { catalog: loadCatalog(config.creditCatalogFile), ...stripeReaders(stripe) };
  // The replicas' open balance streams hear of what this run credits, as they would from the webhook.
  const balanceChanges = new BalanceChanges(db, logger);
  const onBalanceChanged = (userId: string) => balanceChanges.changed(userId);
  const notApplied: NotApplied[] = [];
  const dryRunEvents: Array<Pick<StripeEvent, 'id' | 'type' | 'created'>> = [];
  const backoff: BackoffOptions = {
    ...defaultBackoff,
    onWait: ({ delayMillis, attempt, reason }) =>
      console.error(`Stripe's rate limit (429${reason ? `, ${reason}` : ''}) after attempt ${attempt}: waiting ${(delayMillis / 1000).toFixed(1)} s`),
  };
  const onApplied = (event: StripeEvent, outcome: ReplayOutcome, reason?: string) => {
    if (outcome === 'failed' || outcome === 'unmatched' || outcome === 'mode_mismatch') notApplied.push({ id: event.id, type: event.type, outcome, reason });
  };
  // Ctrl-C or SIGTERM stops between two events: the cursor stays at the last one applied.
  const stop = new AbortController();
  const onSignal = () => stop.abort();
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const progress = new SingleBar({ format: 'replaying {bar} {value}/{total} events | {outcome}', stream: process.stderr }, Presets.shades_classic);
  let progressStarted = false;

  try {
    let summary: ReplaySummary | undefined;
    let counts: ReplayCounts;
    if (values.event !== undefined) {
      const one = await replayOneEvent({ db, stripe, eventContext, stripeMode: config.stripeMode, dryRun: values['dry-run'], backoff, onApplied, onBalanceChanged }, values.event);
      counts = { listed: 1, processed: 0, duplicate: 0, ignored: 0, unmatched: 0, failed: 0, mode_mismatch: 0 };
      if (one.outcome) counts[one.outcome]++;
      else dryRunEvents.push({ id: one.event.id, type: one.event.type, created: one.event.created });
      if (!values.json) console.error(`${one.event.id} (${one.event.type}): ${one.outcome ?? 'not applied (dry run)'}${one.reason ? `: ${one.reason}` : ''}`);
    } else {
      summary = await replayEvents({
        db,
        stripe,
        eventContext,
        stripeMode: config.stripeMode,
        start: sinceSeconds === undefined ? { kind: 'cursor', sinceSecondsWithoutCursor: nowSeconds - defaultLookbackSeconds } : { kind: 'since', sinceSeconds },
        dryRun: values['dry-run'],
        backoff,
        signal: stop.signal,
        onBalanceChanged,
        onListed: (events) => {
          const count = events.length;
          if (values['dry-run']) dryRunEvents.push(...events.map(({ id, type, created }) => ({ id, type, created })));
          if (values['dry-run'] || count === 0) return;
          if (progressStarted) progress.setTotal(progress.getTotal() + count);
          else progress.start(count, 0, { outcome: '' });
          progressStarted = true;
        },
        onApplied: (event, outcome, reason) => {
          onApplied(event, outcome, reason);
          progress.increment({ outcome: `${event.id} ${outcome}` });
        },
      });
      progress.stop();
      counts = summary;
      printWarnings(summary.warnings);
    }

    const exitCode = summary?.interrupted ? exitCodes.interrupted : notApplied.length > 0 ? exitCodes.notApplied : exitCodes.applied;
    report({ counts, summary, notApplied, dryRunEvents, json: values.json, dryRun: values['dry-run'], stripeMode: config.stripeMode, exitCode });
    return exitCode;
  } finally {
    progress.stop();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await balanceChanges.flush();
    await db.close();
  }
}

function report(result: {
  counts: ReplayCounts;
  summary: ReplaySummary | undefined;
  notApplied: NotApplied[];
  dryRunEvents: Array<Pick<StripeEvent, 'id' | 'type' | 'created'>>;
  json: boolean;
  dryRun: boolean;
  stripeMode: string;
  exitCode: number;
}): void {
  const { listed, processed, duplicate, ignored, unmatched, failed, mode_mismatch } = result.counts;
  const cursor = result.summary?.cursor;
  if (result.json) {
    console.log(
      JSON.stringify({
        listed,
        processed,
        duplicate,
        ignored,
        unmatched,
        failed,
        mode_mismatch,
        dry_run: result.dryRun,
        from: result.summary ? new Date(result.summary.fromSeconds * 1000).toISOString() : null,
        cursor: cursor ? { event_id: cursor.eventId, created: new Date(cursor.createdSeconds * 1000).toISOString() } : null,
        interrupted: result.summary?.interrupted ?? false,
        warnings: result.summary?.warnings ?? [],
        not_applied: result.notApplied,
        ...(result.dryRun ? { events: result.dryRunEvents.length > 0 ? result.dryRunEvents : undefined } : {}),
        exit_code: result.exitCode,
      }),
    );
    return;
  }
  if (result.summary) console.log(`${listed} handled ${result.stripeMode}-mode events since ${new Date(result.summary.fromSeconds * 1000).toISOString()}${result.dryRun ? ' (dry run: nothing applied)' : ''}`);
  for (const event of result.dryRunEvents) console.log(`  ${event.id}  ${event.type}  ${new Date(event.created * 1000).toISOString()}`);
  if (!result.dryRun) console.log(`processed ${processed}, duplicate ${duplicate}, ignored ${ignored}, unmatched ${unmatched}, failed ${failed}, other mode ${mode_mismatch}`);
  if (cursor && !result.dryRun) console.log(`cursor: ${cursor.eventId} (${new Date(cursor.createdSeconds * 1000).toISOString()})`);
  for (const entry of result.notApplied) console.error(`${entry.outcome}: ${entry.id} (${entry.type}): ${entry.reason ?? ''}`);
  if (result.notApplied.length > 0) {
    console.error('Some events were not applied (reasons above, also in stripe_events.error): fix the cause, then run again or re-apply one with --event evt_….');
  }
  if (result.summary?.interrupted) console.error('Interrupted: run again to resume from the cursor.');
}

if (require.main === module) {
  main().then(
    (code) => process.exit(code),
    (error: unknown) => {
      const failure = describeFailure(error);
      console.error(failure.message);
      process.exit(failure.exitCode);
    },
  );
}
