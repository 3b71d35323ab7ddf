/** Measures the webhook service against a thin-ingest reference, on an empty and a preloaded database: see `usage`. */
import { fork, type ChildProcess } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { checkDeliveryInvariants, deliveryInvariantsHold } from '../../service/test/support/deliveryInvariants';
import { buildService, startServiceProcess, stopAllServiceProcesses, type ServiceProcess } from '../../service/test/support/serviceProcess';
import { createTestDatabase, type TestDatabase } from '../../service/test/support/testDatabase';
import type { CeilingMessage, CeilingResult } from './ceiling';
import { createPreloadedDatabase, preloadedEvents, preloadedUsers } from './preload';
import type { ReferenceReady, ReferenceStartMessage } from './reference';
import type { LoadResult, PrepareMessage, RunMessage } from './loadgen';
import { corePercent, cpuTicks, postgresCpuTicks } from './procStats';
import { buildWorkload, mix, type ItemKind } from './workload';
import { parseCommandLine, wholeNumberOption } from '../lib/cli';
import { readDockerfile } from '../../infra/test/support/dockerfile';

const usage = `
Usage: npm run bench [-- --replicas 2] [--duration 5] [--levels 1,8,32] [--pool 10] [--log-level info] [--profile DIR]

Measures the webhook service against a thin-ingest reference on this machine, in one session:
  1. builds the service and starts it (one process, or --replicas N) on a fresh PostgreSQL database, and
     as many reference processes: the same HTTP stack, raw-body reading and signature check, storing each
     event with one INSERT … ON CONFLICT DO NOTHING (what a sync-only ingester does);
  2. at each concurrency level runs the database-only figure (processEvent straight through pg, no HTTP:
     information only), the reference and the service, on the same kind of signed deliveries from a
     separate load-generator process, in slices taking turns so that each side sees the same background
     load; ratio = service events/s ÷ reference events/s;
  3. runs the service at the top level on a copy of a preloaded database (1 M events, 1 M ledger rows,
     100 k users; the template is built once per schema and kept between runs), in turn with the service
     on a fresh empty database (new replicas for both, warmed up alike);
  4. measures latency at half the peak rate with a fixed arrival rate (open loop);
  5. checks that every acknowledged event was applied once and the books balance.
Prints a table, and as its last line one JSON object (events_per_s, reference_events_per_s, ratio, p99_ms,
rss_mb, duplicate_p50_ms, new_p50_ms, preloaded_events_per_s, correct, …). Progress goes to stderr. Needs
PostgreSQL on TEST_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres). Not part of CI; the
README says how long it takes.

Options:
  --replicas N       service processes (default 1), and as many reference processes
  --duration S       seconds per side and level (default 5), taken in --rounds slices
  --rounds N         slices each side's time is cut into, the sides taking turns (default 3)
  --levels LIST      concurrency levels, comma-separated (default 1,8,32)
  --pool N           DATABASE_POOL_MAX of each service and reference process (default 10)
  --log-level LEVEL  the service's LOG_LEVEL (default info, as deployed)
  --profile DIR      write a V8 CPU profile of each service process into DIR
  --no-preload       skip the preloaded database (its figures are then absent)
  -h, --help         show this text
`;

const cli = parseCommandLine({
  usage,
  options: {
    replicas: { type: 'string', default: '1' },
    duration: { type: 'string', default: '5' },
    levels: { type: 'string', default: '1,8,32' },
    pool: { type: 'string', default: '10' },
    'log-level': { type: 'string', default: 'info' },
    profile: { type: 'string' },
    rounds: { type: 'string', default: '3' },
    'no-preload': { type: 'boolean', default: false },
  },
});
const flags = cli.values;
const replicas = wholeNumberOption(cli, '--replicas', flags.replicas, 1, 16);
const durationMillis = wholeNumberOption(cli, '--duration', flags.duration, 1) * 1000;
const levels = flags.levels.split(',').map((level) => wholeNumberOption(cli, '--levels', level, 1, 1000));
const poolMax = wholeNumberOption(cli, '--pool', flags.pool, 1, 1000);
const rounds = wholeNumberOption(cli, '--rounds', flags.rounds, 1, 100);
const sliceMillis = durationMillis / rounds;
const secret = 'whsec_bench_5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b';
const seed = 20_251_128;
const warmupMillis = 2_000;
const childReplyDeadlineMillis = 120_000;
const sampleEveryMillis = 100;
/** Prepared deliveries per second of run, as a multiple of the rate expected from the warm-up. */
const headroom = 2.5;

const progress = (text: string) => process.stderr.write(`bench: ${text}\n`);

// ---------------------------------------------------------------------------------------------
// Child processes

function forkChild(file: string): ChildProcess {
  return fork(path.join(__dirname, file), [], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
}

function ask<T extends { type: string }>(child: ChildProcess, message: object, replyType: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${replyType} from child within ${childReplyDeadlineMillis} ms`)), childReplyDeadlineMillis);
    const onMessage = (reply: T) => {
      if (reply.type !== replyType) return;
      clearTimeout(timer);
      child.off('message', onMessage);
      resolve(reply);
    };
    child.on('message', onMessage);
    child.send(message);
  });
}

// ---------------------------------------------------------------------------------------------
// CPU of the service processes and of PostgreSQL

interface CpuSnapshot {
  /** The processes under test: the service replicas, or the reference processes. */
  measured: number;
  postgres: number;
  at: number;
}

function cpuSnapshot(pids: number[]): CpuSnapshot {
  return { measured: pids.reduce((sum, pid) => sum + cpuTicks(pid), 0), postgres: postgresCpuTicks(), at: performance.now() };
}

// ---------------------------------------------------------------------------------------------
// Statistics

function percentile(values: readonly number[], q: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

const all = (latencies: Record<ItemKind, number[]>) => Object.values(latencies).flat();
const round = (value: number, digits = 1) => Math.round(value * 10 ** digits) / 10 ** digits;

interface LevelResult {
  concurrency: number;
  serviceEventsPerSecond: number;
  referenceEventsPerSecond: number;
  dbOnlyTxPerSecond: number;
  ratio: number;
  p50Millis: number;
  p99Millis: number;
  duplicatesPerSecond: number;
  newP50Millis: number;
  duplicateP50Millis: number;
  /** The same two in the database-only run: what the crediting itself costs, without HTTP and signature. */
  dbOnlyNewP50Millis: number;
  dbOnlyDuplicateP50Millis: number;
  referenceP50Millis: number;
  serviceCpuPercent: number;
  postgresCpuPercent: number;
  referenceCpuPercent: number;
  referencePostgresCpuPercent: number;
  loadgenCpuPercent: number;
  dbOnlyPostgresCpuPercent: number;
  rssMaxMegabytes: number;
  exhausted: boolean;
  failures: number;
}

interface SentRun {
  database: TestDatabase;
  prefix: string;
  count: number;
  acknowledged: number[];
}

interface Timed {
  result: LoadResult;
  before: CpuSnapshot;
  after: CpuSnapshot;
  runRssMax: number;
}

/** Every slice's latencies, per kind of delivery. */
function mergedLatencies(slices: Array<Record<ItemKind, number[]>>): Record<ItemKind, number[]> {
  const merged: Record<ItemKind, number[]> = { new: [], duplicate: [], subscription: [], refund: [] };
  for (const latencies of slices) for (const kind of Object.keys(merged) as ItemKind[]) merged[kind].push(...latencies[kind]);
  return merged;
}

/**
 * The slices of one side (service, reference, …) taken in turn with the other sides' slices, as one run: on a
 * shared machine the background load changes from second to second, and interleaving gives every side the same.
 */
function merged(slices: Timed[]): Timed {
  const first = slices[0]!;
  const latenciesMillis = mergedLatencies(slices.map((slice) => slice.result.latenciesMillis));
  const outcomes: Record<string, number> = {};
  const statusCounts: Record<string, number> = {};
  let sent = 0;
  let elapsedMillis = 0;
  let cpuMillis = 0;
  let unacknowledged = 0;
  const before: CpuSnapshot = { measured: 0, postgres: 0, at: 0 };
  const after: CpuSnapshot = { measured: 0, postgres: 0, at: 0 };
  for (const slice of slices) {
    for (const [key, count] of Object.entries(slice.result.outcomes)) outcomes[key] = (outcomes[key] ?? 0) + count;
    for (const [key, count] of Object.entries(slice.result.statusCounts)) statusCounts[key] = (statusCounts[key] ?? 0) + count;
    sent += slice.result.sent;
    elapsedMillis += slice.result.elapsedMillis;
    cpuMillis += slice.result.cpuMillis;
    unacknowledged += slice.result.sent - slice.result.acknowledged.length;
    after.measured += slice.after.measured - slice.before.measured;
    // A PostgreSQL process that ended during the slice takes its ticks with it: never count less than nothing.
    after.postgres += Math.max(0, slice.after.postgres - slice.before.postgres);
    after.at += slice.after.at - slice.before.at;
  }
  return {
    // `acknowledged` keeps only its length's meaning here (failures); correctness reads each slice's own.
    result: { ...first.result, sent, elapsedMillis, cpuMillis, latenciesMillis, outcomes, statusCounts, exhausted: slices.some((slice) => slice.result.exhausted), acknowledged: new Array<number>(sent - unacknowledged).fill(0) },
    before,
    after,
    runRssMax: Math.max(...slices.map((slice) => slice.runRssMax)),
  };
}

function mergedDbOnly(slices: CeilingResult[]): CeilingResult {
  return {
    ...slices[0]!,
    transactions: slices.reduce((sum, slice) => sum + slice.transactions, 0),
    elapsedMillis: slices.reduce((sum, slice) => sum + slice.elapsedMillis, 0),
    postgresCpuTicks: slices.reduce((sum, slice) => sum + slice.postgresCpuTicks, 0),
    errors: slices.reduce((sum, slice) => sum + slice.errors, 0),
    exhausted: slices.some((slice) => slice.exhausted),
    latenciesMillis: mergedLatencies(slices.map((slice) => slice.latenciesMillis)),
  };
}

// ---------------------------------------------------------------------------------------------

/** The flags the image gives node (its CMD, e.g. the young generation's size): measured as deployed. */
const imageNodeFlags = (() => {
  const runtime = readDockerfile(path.join(__dirname, '..', '..')).stages.find((stage) => stage.name === 'runtime');
  const command = runtime?.instructions.find((instruction) => instruction.startsWith('CMD '));
  if (!command) throw new Error('the Dockerfile has no runtime stage with a CMD');
  const [, ...args] = JSON.parse(command.slice('CMD '.length)) as string[];
  return args.filter((arg) => arg.startsWith('--'));
})();

async function startReplicas(databaseUrl: string, label: string): Promise<{ services: ServiceProcess[]; readyMillis: number[] }> {
  const services: ServiceProcess[] = [];
  const readyMillis: number[] = [];
  for (let i = 0; i < replicas; i++) {
    const spawnedAt = performance.now();
    const service = await startServiceProcess({
      databaseUrl,
      webhookSecret: secret,
      env: { DATABASE_POOL_MAX: String(poolMax) },
      logLevel: flags['log-level'],
      nodeArgs: [...imageNodeFlags, ...(flags.profile ? ['--cpu-prof', `--cpu-prof-dir=${path.resolve(flags.profile)}`] : [])],
      name: `${label} replica ${i + 1}`,
    });
    while ((await fetch(`${service.url}/readyz`)).status !== 200) {
      if (performance.now() - spawnedAt > 30_000) throw new Error('service not ready within 30 s');
    }
    readyMillis.push(performance.now() - spawnedAt);
    services.push(service);
  }
  return { services, readyMillis };
}

async function main(): Promise<void> {
  const started = performance.now();
  progress(`building the service; ${replicas} replica(s), pool ${poolMax} each, levels ${levels.join('/')}, ${durationMillis / 1000} s each`);
  await buildService();
  const databases: TestDatabase[] = [];
  const children: ChildProcess[] = [];
  try {
    const [serviceDb, dbOnlyDb, referenceDb] = await Promise.all([createTestDatabase({ poolMax: 4 }), createTestDatabase({ poolMax: 4 }), createTestDatabase({ poolMax: 4 })]);
    databases.push(serviceDb, dbOnlyDb, referenceDb);
    const preloadedDb = flags['no-preload'] ? undefined : await createPreloadedDatabase(progress);
    if (preloadedDb) databases.push(preloadedDb);

    const { services, readyMillis } = await startReplicas(serviceDb.url, 'service');
    const startupMillis = Math.max(...services.map((s) => s.startupMillis));
    const rssIdleMegabytes = Math.max(...services.map((s) => (s.rssBytes() ?? 0) / 2 ** 20));
    progress(`service listening after ${round(startupMillis, 0)} ms, ready after ${round(Math.max(...readyMillis), 0)} ms, RSS idle ${round(rssIdleMegabytes)} MB`);

    const loadgen = forkChild('loadgen.ts');
    const dbOnlyWorker = forkChild('ceiling.ts');
    children.push(loadgen, dbOnlyWorker);
    const references: ChildProcess[] = [];
    const referenceTargets: string[] = [];
    for (let i = 0; i < replicas; i++) {
      const reference = forkChild('reference.ts');
      children.push(reference);
      references.push(reference);
      const ready = await ask<ReferenceReady>(reference, { type: 'start', databaseUrl: referenceDb.url, poolMax, secret } satisfies ReferenceStartMessage, 'ready');
      referenceTargets.push(ready.url);
    }
    const sentRuns: SentRun[] = [];
    let runNumber = 0;

    const runDbOnly = (concurrency: number, millis: number, count: number) =>
      ask<CeilingResult>(
        dbOnlyWorker,
        {
          type: 'ceiling',
          databaseUrl: dbOnlyDb.url,
          poolMax: poolMax * replicas,
          concurrency,
          durationMillis: millis,
          prefix: `c${++runNumber}`,
          count,
          seed: seed + runNumber,
        } satisfies CeilingMessage,
        'ceiling-result',
      );

    /** Largest RSS of one service process, and of all replicas together, while under load. */
    let rssMaxBytes = 0;
    let rssTotalMaxBytes = 0;
    /** One load run against `targets`; the CPU of `measured` (service or reference processes) and of PostgreSQL. */
    const runLoad = async (targets: string[], measured: number[], run: Omit<RunMessage, 'type' | 'targets'>, count: number, database?: TestDatabase, serviceProcesses: ServiceProcess[] = []): Promise<Timed> => {
      const prefix = `${database ? 's' : 'r'}${++runNumber}`;
      await ask(loadgen, { type: 'prepare', prefix, count, seed: seed + runNumber, secret } satisfies PrepareMessage, 'prepared');
      const before = cpuSnapshot(measured);
      let runRssMax = 0;
      const sampler = setInterval(() => {
        const rss = serviceProcesses.map((s) => s.rssBytes() ?? 0);
        runRssMax = Math.max(runRssMax, ...rss);
        rssTotalMaxBytes = Math.max(rssTotalMaxBytes, rss.reduce((sum, bytes) => sum + bytes, 0));
      }, sampleEveryMillis);
      const result = await ask<LoadResult>(loadgen, { type: 'run', targets, ...run } satisfies RunMessage, 'result');
      clearInterval(sampler);
      const after = cpuSnapshot(measured);
      rssMaxBytes = Math.max(rssMaxBytes, runRssMax);
      if (database) sentRuns.push({ database, prefix, count, acknowledged: result.acknowledged });
      return { result, before, after, runRssMax };
    };
    const servicePids = services.map((s) => s.pid);
    const referencePids = references.map((r) => r.pid!);
    const runService = (run: Omit<RunMessage, 'type' | 'targets'>, count: number) => runLoad(services.map((s) => s.webhookUrl), servicePids, run, count, serviceDb, services);
    const runReference = (run: Omit<RunMessage, 'type' | 'targets'>, count: number) => runLoad(referenceTargets, referencePids, run, count);

    // Warm-up (JIT, connection pools, caches); also tells how many deliveries to prepare per run.
    progress('warming up');
    const warmDbOnly = await runDbOnly(8, warmupMillis, 20_000);
    const warmReference = await runReference({ concurrency: 8, durationMillis: warmupMillis }, 20_000);
    const warm = await runService({ concurrency: 8, durationMillis: warmupMillis }, 8_000);
    const expectedRate = Math.max(
      warmDbOnly.transactions / (warmDbOnly.elapsedMillis / 1000),
      warmReference.result.sent / (warmReference.result.elapsedMillis / 1000),
      warm.result.sent / (warm.result.elapsedMillis / 1000),
    );
    const countFor = (millis: number) => Math.ceil(Math.max(2_000, expectedRate * headroom * (millis / 1000)));

    const results: LevelResult[] = [];
    for (const concurrency of levels) {
      // Each side in `rounds` slices, taken in turn, so that all three see the same background load.
      progress(`concurrency ${concurrency}: database only, reference and service in turn, ${rounds} rounds`);
      const dbOnlySlices: CeilingResult[] = [];
      const referenceSlices: Timed[] = [];
      const serviceSlices: Timed[] = [];
      for (let round = 0; round < rounds; round++) {
        dbOnlySlices.push(await runDbOnly(concurrency, sliceMillis, countFor(sliceMillis)));
        referenceSlices.push(await runReference({ concurrency, durationMillis: sliceMillis }, countFor(sliceMillis)));
        serviceSlices.push(await runService({ concurrency, durationMillis: sliceMillis }, countFor(sliceMillis)));
      }
      const dbOnly = mergedDbOnly(dbOnlySlices);
      const reference = merged(referenceSlices);
      const service = merged(serviceSlices);
      const { result } = service;
      const seconds = result.elapsedMillis / 1000;
      const serviceEventsPerSecond = result.sent / seconds;
      const referenceEventsPerSecond = reference.result.sent / (reference.result.elapsedMillis / 1000);
      results.push({
        concurrency,
        serviceEventsPerSecond,
        referenceEventsPerSecond,
        dbOnlyTxPerSecond: dbOnly.transactions / (dbOnly.elapsedMillis / 1000),
        ratio: serviceEventsPerSecond / referenceEventsPerSecond,
        p50Millis: percentile(all(result.latenciesMillis), 0.5),
        p99Millis: percentile(all(result.latenciesMillis), 0.99),
        duplicatesPerSecond: (result.outcomes.duplicate ?? 0) / seconds,
        newP50Millis: percentile(result.latenciesMillis.new, 0.5),
        duplicateP50Millis: percentile(result.latenciesMillis.duplicate, 0.5),
        dbOnlyNewP50Millis: percentile(dbOnly.latenciesMillis.new, 0.5),
        dbOnlyDuplicateP50Millis: percentile(dbOnly.latenciesMillis.duplicate, 0.5),
        referenceP50Millis: percentile(all(reference.result.latenciesMillis), 0.5),
        serviceCpuPercent: corePercent(service.after.measured - service.before.measured, service.after.at - service.before.at),
        postgresCpuPercent: corePercent(service.after.postgres - service.before.postgres, service.after.at - service.before.at),
        referenceCpuPercent: corePercent(reference.after.measured - reference.before.measured, reference.after.at - reference.before.at),
        referencePostgresCpuPercent: corePercent(reference.after.postgres - reference.before.postgres, reference.after.at - reference.before.at),
        loadgenCpuPercent: (result.cpuMillis / result.elapsedMillis) * 100,
        dbOnlyPostgresCpuPercent: corePercent(dbOnly.postgresCpuTicks, dbOnly.elapsedMillis),
        rssMaxMegabytes: service.runRssMax / 2 ** 20,
        exhausted: result.exhausted || reference.result.exhausted || dbOnly.exhausted,
        failures: result.sent - result.acknowledged.length + (reference.result.sent - reference.result.acknowledged.length) + dbOnly.errors,
      });
      const last = results[results.length - 1]!;
      progress(
        `concurrency ${concurrency}: service ${round(last.serviceEventsPerSecond, 0)} ev/s, reference ${round(last.referenceEventsPerSecond, 0)} ev/s, ratio ${round(last.ratio, 2)} ` +
          `(database only ${round(last.dbOnlyTxPerSecond, 0)} tx/s)`,
      );
    }
    const top = results.find((r) => r.concurrency === Math.max(...levels))!;

    // Latency at half the peak rate, with a fixed arrival rate (queueing shows up as latency).
    const peak = results.reduce((best, r) => (r.serviceEventsPerSecond > best.serviceEventsPerSecond ? r : best), results[0]!);
    const halfRate = peak.serviceEventsPerSecond / 2;
    progress(`open loop at ${round(halfRate, 0)} ev/s (half the peak)`);
    const half = await runService({ concurrency: 0, durationMillis, ratePerSecond: halfRate }, Math.ceil(halfRate * (durationMillis / 1000) * 1.1) + 100);
    const halfLatencies = all(half.result.latenciesMillis);
    const halfFailures = half.result.sent - half.result.acknowledged.length;

    // The service at the top level on the preloaded database against the same on a fresh empty one: new replicas
    // for both, warmed up alike, their slices taking turns.
    let preloaded: { eventsPerSecond: number; emptyEventsPerSecond: number; failures: number; p99Millis: number } | undefined;
    let freshDb: TestDatabase | undefined;
    if (preloadedDb) {
      freshDb = await createTestDatabase({ poolMax: 4 });
      databases.push(freshDb);
      const sides = [];
      for (const [database, label] of [[preloadedDb, 'preloaded'], [freshDb, 'empty']] as const) {
        const { services: replicasOfSide } = await startReplicas(database.url, label);
        sides.push({ database, replicas: replicasOfSide, targets: replicasOfSide.map((s) => s.webhookUrl), pids: replicasOfSide.map((s) => s.pid), slices: [] as Timed[] });
      }
      progress(`preloaded and empty database: warming up, then concurrency ${top.concurrency} in turn, ${rounds} rounds`);
      for (const side of sides) await runLoad(side.targets, side.pids, { concurrency: 8, durationMillis: warmupMillis }, 8_000, side.database, side.replicas);
      for (let round = 0; round < rounds; round++) {
        for (const side of sides) side.slices.push(await runLoad(side.targets, side.pids, { concurrency: top.concurrency, durationMillis: sliceMillis }, countFor(sliceMillis), side.database, side.replicas));
      }
      const [run, beside] = sides.map((side) => merged(side.slices)) as [Timed, Timed];
      preloaded = {
        eventsPerSecond: run.result.sent / (run.result.elapsedMillis / 1000),
        emptyEventsPerSecond: beside.result.sent / (beside.result.elapsedMillis / 1000),
        failures: run.result.sent - run.result.acknowledged.length + (beside.result.sent - beside.result.acknowledged.length),
        p99Millis: percentile(all(run.result.latenciesMillis), 0.99),
      };
      progress(`preloaded database: ${round(preloaded.eventsPerSecond, 0)} ev/s, an empty one in the same rounds ${round(preloaded.emptyEventsPerSecond, 0)}`);
      await Promise.all(sides.flatMap((side) => side.replicas.map((s) => s.stop())));
    }

    // Correctness over everything the services acknowledged.
    progress('checking correctness');
    const correctness = await checkCorrectness(serviceDb, sentRuns);
    const preloadedCorrectness = preloadedDb ? await checkCorrectness(preloadedDb, sentRuns) : undefined;
    const freshCorrectness = freshDb ? await checkCorrectness(freshDb, sentRuns) : undefined;
    const totalFailures = results.reduce((sum, r) => sum + r.failures, 0) + halfFailures + (preloaded?.failures ?? 0);

    const first = results[0]!;
    const summary = {
      events_per_s: round(top.serviceEventsPerSecond, 0),
      reference_events_per_s: round(top.referenceEventsPerSecond, 0),
      ratio: round(top.ratio, 3),
      db_only_tx_per_s: round(top.dbOnlyTxPerSecond, 0),
      concurrency: top.concurrency,
      p99_ms: round(percentile(halfLatencies, 0.99), 2),
      p50_ms: round(percentile(halfLatencies, 0.5), 2),
      half_rate_per_s: round(halfRate, 0),
      p99_ms_at_top_concurrency: round(top.p99Millis, 2),
      duplicates_per_s: round(top.duplicatesPerSecond, 0),
      new_p50_ms: round(first.newP50Millis, 3),
      duplicate_p50_ms: round(first.duplicateP50Millis, 3),
      new_vs_duplicate_cost: round(first.newP50Millis / first.duplicateP50Millis, 2),
      db_only_new_p50_ms: round(first.dbOnlyNewP50Millis, 3),
      db_only_duplicate_p50_ms: round(first.dbOnlyDuplicateP50Millis, 3),
      preloaded_events_per_s: preloaded ? round(preloaded.eventsPerSecond, 0) : null,
      empty_events_per_s_beside_preloaded: preloaded ? round(preloaded.emptyEventsPerSecond, 0) : null,
      preloaded_vs_empty: preloaded ? round(preloaded.eventsPerSecond / preloaded.emptyEventsPerSecond, 3) : null,
      preloaded_rows: preloaded ? { events: preloadedEvents, ledger: preloadedEvents, users: preloadedUsers } : null,
      rss_mb: round(rssMaxBytes / 2 ** 20, 1),
      rss_total_mb: round(rssTotalMaxBytes / 2 ** 20, 1),
      rss_idle_mb: round(rssIdleMegabytes, 1),
      service_cpu_percent: round(top.serviceCpuPercent, 0),
      postgres_cpu_percent: round(top.postgresCpuPercent, 0),
      startup_ms: round(startupMillis, 0),
      ready_ms: round(Math.max(...readyMillis), 0),
      replicas,
      pool_max: poolMax,
      cores: os.cpus().length,
      failures: totalFailures,
      correct: correctness.ok && (preloadedCorrectness?.ok ?? true) && (freshCorrectness?.ok ?? true) && totalFailures === 0,
      levels: results.map((r) => ({
        concurrency: r.concurrency,
        events_per_s: round(r.serviceEventsPerSecond, 0),
        reference_events_per_s: round(r.referenceEventsPerSecond, 0),
        ratio: round(r.ratio, 3),
        db_only_tx_per_s: round(r.dbOnlyTxPerSecond, 0),
        p99_ms: round(r.p99Millis, 2),
      })),
    };
    printTable(results, summary, [correctness, ...(preloadedCorrectness ? [preloadedCorrectness] : []), ...(freshCorrectness ? [freshCorrectness] : [])], half, halfRate);
    progress(`done in ${round((performance.now() - started) / 1000, 0)} s`);
    process.stdout.write(`${JSON.stringify(summary)}\n`);
    if (!summary.correct) process.exitCode = 1;
  } finally {
    for (const child of children) child.kill('SIGTERM');
    await stopAllServiceProcesses();
    await Promise.all(databases.map((database) => database.drop()));
  }
}

interface Correctness {
  ok: boolean;
  acknowledgedEvents: number;
  recordedEvents: number;
  balanceMismatches: number;
  usersChecked: number;
  invariantProblems: string[];
}

/** Every acknowledged event recorded once, each user's purchased balance as expected, invariants hold. */
async function checkCorrectness(database: TestDatabase, allRuns: SentRun[]): Promise<Correctness> {
  const runs = allRuns.filter((run) => run.database === database);
  const acknowledgedIds = new Set<string>();
  const expected = new Map<string, number>();
  for (const run of runs) {
    const items = buildWorkload({ prefix: run.prefix, count: run.count, seed: seed + Number(run.prefix.slice(1)) });
    const acknowledged = new Set(run.acknowledged);
    for (const index of acknowledged) {
      const item = items[index]!;
      acknowledgedIds.add(item.event.id);
      if (item.kind === 'new') expected.set(item.userId!, (expected.get(item.userId!) ?? 0) + item.credits!);
    }
    for (const index of acknowledged) {
      const item = items[index]!;
      const purchase = items[item.of ?? -1];
      if (item.kind === 'refund' && purchase && acknowledged.has(item.of!)) expected.set(purchase.userId!, expected.get(purchase.userId!)! - purchase.credits!);
    }
  }
  const { rows } = await database.db.query<{ userId: string; purchased: number }>(
    `SELECT user_id AS "userId", purchased_credits_balance AS purchased FROM service_subscriptions WHERE user_id LIKE 's%\\_user\\_%'`,
  );
  const actual = new Map(rows.map((row) => [row.userId, row.purchased]));
  let balanceMismatches = 0;
  for (const [userId, credits] of expected) if ((actual.get(userId) ?? 0) !== credits) balanceMismatches++;
  for (const userId of actual.keys()) if (!expected.has(userId)) balanceMismatches++;
  const events = await database.db.query<{ count: number }>("SELECT count(*)::int AS count FROM stripe_events WHERE id NOT LIKE 'evt\\_preload\\_%'");
  const report = await checkDeliveryInvariants(database.db, { acknowledged: [...acknowledgedIds] });
  const invariantProblems = Object.entries(report)
    .filter(([key, value]) => (value as unknown[]).length > 0 && key in deliveryInvariantsHold)
    .map(([key, value]) => `${key}: ${(value as unknown[]).length}`);
  return {
    ok: balanceMismatches === 0 && invariantProblems.length === 0 && events.rows[0]!.count === acknowledgedIds.size,
    acknowledgedEvents: acknowledgedIds.size,
    recordedEvents: events.rows[0]!.count,
    balanceMismatches,
    usersChecked: expected.size,
    invariantProblems,
  };
}

function printTable(results: LevelResult[], summary: Record<string, unknown>, correctness: Correctness[], half: Timed, halfRate: number): void {
  const cpu = os.cpus();
  const header = ['conc.', 'service ev/s', 'reference ev/s', 'ratio', 'db-only tx/s', 'p50 ms', 'p99 ms', 'dup/s', 'new p50', 'dup p50', 'svc CPU', 'pg CPU', 'ref CPU', 'pg CPU (ref)', 'pg CPU (db-only)', 'loadgen CPU', 'RSS MB'];
  const rows = results.map((r) => [
    String(r.concurrency),
    round(r.serviceEventsPerSecond, 0).toString(),
    round(r.referenceEventsPerSecond, 0).toString(),
    r.ratio.toFixed(2),
    round(r.dbOnlyTxPerSecond, 0).toString(),
    r.p50Millis.toFixed(2),
    r.p99Millis.toFixed(2),
    round(r.duplicatesPerSecond, 0).toString(),
    r.newP50Millis.toFixed(2),
    r.duplicateP50Millis.toFixed(2),
    `${round(r.serviceCpuPercent, 0)}%`,
    `${round(r.postgresCpuPercent, 0)}%`,
    `${round(r.referenceCpuPercent, 0)}%`,
    `${round(r.referencePostgresCpuPercent, 0)}%`,
    `${round(r.dbOnlyPostgresCpuPercent, 0)}%`,
    `${round(r.loadgenCpuPercent, 0)}%`,
    round(r.rssMaxMegabytes, 0).toString(),
  ]);
  const widths = header.map((title, i) => Math.max(title.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]) => cells.map((cell, i) => cell.padStart(widths[i]!)).join('  ');
  const halfLatencies = all(half.result.latenciesMillis);
  const out = [
    '',
    `Webhook service vs. a thin-ingest reference — ${os.cpus().length} × ${cpu[0]?.model ?? 'CPU'}, ${round(os.totalmem() / 2 ** 30, 0)} GiB, Node ${process.version}`,
    `${summary.replicas} replica(s), pool ${summary.pool_max} each, node ${imageNodeFlags.join(' ') || 'without flags'} (the image's CMD); mix ${Object.entries(mix).map(([k, v]) => `${v}% ${k}`).join(', ')}; ${durationMillis / 1000} s per side and level in ${rounds} rounds; ` +
      'CPU in % of one core (PostgreSQL: every postgres process on the machine)',
    '',
    line(header),
    ...rows.map(line),
    '',
    `Half the peak rate (${round(halfRate, 0)} ev/s, open loop): p50 ${percentile(halfLatencies, 0.5).toFixed(2)} ms, p99 ${percentile(halfLatencies, 0.99).toFixed(2)} ms, RSS max ${round(half.runRssMax / 2 ** 20, 0)} MB`,
    `Start-up: listening after ${summary.startup_ms} ms, ready after ${summary.ready_ms} ms; RSS per process idle ${summary.rss_idle_mb} MB, ` +
      `under load max ${summary.rss_mb} MB${Number(summary.replicas) > 1 ? ` (all replicas together ${summary.rss_total_mb} MB)` : ''}`,
    `Duplicate vs new at concurrency ${results[0]!.concurrency}: p50 ${results[0]!.duplicateP50Millis.toFixed(2)} ms vs ${results[0]!.newP50Millis.toFixed(2)} ms ` +
      `(database only: ${results[0]!.dbOnlyDuplicateP50Millis.toFixed(2)} ms vs ${results[0]!.dbOnlyNewP50Millis.toFixed(2)} ms)`,
    summary.preloaded_events_per_s === null
      ? 'Preloaded database: skipped (--no-preload)'
      : `Preloaded database (1 M events, 1 M ledger rows, 100 k users): ${summary.preloaded_events_per_s} ev/s at concurrency ${summary.concurrency}, ` +
        `${summary.preloaded_vs_empty} × an empty database's in the same rounds (${summary.empty_events_per_s_beside_preloaded} ev/s)`,
    ...correctness.map(
      (c, i) =>
        `Correctness (${['main', 'preloaded', 'second empty'][i]} database): ${c.acknowledgedEvents} events acknowledged, ${c.recordedEvents} recorded; ${c.usersChecked} users' balances checked, ` +
        `${c.balanceMismatches} mismatches; invariants ${c.invariantProblems.length === 0 ? 'hold' : c.invariantProblems.join(', ')}`,
    ),
    `Failed deliveries ${summary.failures}${results.some((r) => r.exhausted) ? ' (some run used up its prepared deliveries early: its rate covers a shorter time)' : ''}`,
    `Correct: ${summary.correct}`,
    '',
  ];
  process.stdout.write(out.join('\n'));
}

main().catch(async (error: unknown) => {
  progress(`failed: ${error instanceof Error ? error.stack : String(error)}`);
  await stopAllServiceProcesses();
  process.exit(1);
});
