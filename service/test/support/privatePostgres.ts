/**
 * A private PostgreSQL server (Debian's binaries, a temporary data directory, a free loopback port) that a
 * test may stop and start at will, without touching the shared server other test files use. initdb refuses
 * to run as root, so the server runs as the `postgres` OS user.
 */
import { execFile } from 'node:child_process';
import { chown, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { postgresUser, postgresUserName } from '../../embeddedDatabaseAsRoot';
import { freePort } from '../../freePort';

const run = promisify(execFile);
const binDir = process.env.POSTGRES_BIN_DIR ?? '/usr/lib/postgresql/15/bin';

export interface PrivatePostgres {
  port: number;
  /** postgres://postgres@127.0.0.1:<port>/<database> */
  url(database?: string): string;
  /** The superuser over the server's Unix socket, which trusts it whatever `hostAuth` says. */
  socketUrl(database?: string): string;
  start(): Promise<void>;
  /** Fast shutdown: open sessions are terminated (SQLSTATE 57P01), as in a real restart. */
  stop(): Promise<void>;
  destroy(): Promise<void>;
}

async function asPostgres(command: string, args: string[]): Promise<void> {
  const asRoot = process.getuid?.() === 0;
  const [file, argv] = asRoot ? ['runuser', ['-u', postgresUserName, '--', path.join(binDir, command), ...args]] : [path.join(binDir, command), args];
  await run(file, argv, { timeout: 60_000 });
}

export interface PrivatePostgresOptions {
  /** How TCP connections authenticate: `trust` (default) or `scram-sha-256`, to check passwords for real. */
  hostAuth?: 'trust' | 'scram-sha-256';
}

export async function startPrivatePostgres(options: PrivatePostgresOptions = {}): Promise<PrivatePostgres> {
  const root = await mkdtemp(path.join(os.tmpdir(), 'private-pg-'));
  const { uid, gid } = await postgresUser();
  if (process.getuid?.() === 0) await chown(root, uid, gid);
  const dataDir = path.join(root, 'data');
  const port = await freePort();
  const hostAuth = options.hostAuth ?? 'trust';
  await asPostgres('initdb', ['-D', dataDir, '--auth-local=trust', `--auth-host=${hostAuth}`, '-U', 'postgres', '--no-sync', '--no-instructions', '-E', 'UTF8']);
  const serverOptions = `-p ${port} -k ${root} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c max_connections=100`;
  const pgCtl = (...args: string[]) => asPostgres('pg_ctl', ['-D', dataDir, '-w', '-t', '30', ...args]);
  let running = false;
  const instance: PrivatePostgres = {
    port,
    url: (database = 'postgres') => `postgres://postgres@127.0.0.1:${port}/${database}`,
    socketUrl: (database = 'postgres') => `postgres://postgres@${encodeURIComponent(root)}:${port}/${database}`,
    async start() {
      await pgCtl('-o', serverOptions, '-l', path.join(root, 'server.log'), 'start');
      running = true;
    },
    async stop() {
      await pgCtl('-m', 'fast', 'stop');
      running = false;
    },
    async destroy() {
      if (running) await pgCtl('-m', 'immediate', 'stop').catch(() => undefined);
      running = false;
      await rm(root, { recursive: true, force: true });
    },
  };
  await instance.start();
  return instance;
}
