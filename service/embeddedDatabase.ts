import { PGlite } from '@electric-sql/pglite';
import { PGLiteSocketServer } from '@electric-sql/pglite-socket';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';

/** PGlite multiplexes connections onto one backend; this bounds how many the pool and listener may open. */
const maxEmbeddedConnections = 32;

export interface EmbeddedDatabase {
  url: string;
  stop(): Promise<void>;
}

/**
 * A PostgreSQL for `npm start` on a machine without a server: PGlite with its data under `dataDir`, served
 * over the PostgreSQL wire protocol on loopback so the service uses the same `pg` code path as in production.
 * Not for production: it runs one transaction at a time.
 */
export async function startEmbeddedDatabase(dataDir: string): Promise<EmbeddedDatabase> {
  const directory = path.join(dataDir, 'pglite');
  await mkdir(directory, { recursive: true });
  const pglite = await PGlite.create(directory);
  const server = new PGLiteSocketServer({ db: pglite, host: '127.0.0.1', port: 0, maxConnections: maxEmbeddedConnections });
  await server.start();
  const address = server.getServerConn();
  return {
    url: `postgres://postgres@${address}/postgres`,
    async stop() {
      await server.stop();
      await pglite.close();
    },
  };
}
