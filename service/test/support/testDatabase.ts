import { randomBytes } from 'node:crypto';
import { connectDatabase, type Database } from '../../db';
import { createLogger } from '../../logger';
import { runMigrations } from '../../migrations';

/** The PostgreSQL server tests run against (CI starts it); each test file gets its own fresh database. */
export const testServerUrl = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

export interface TestDatabase {
  url: string;
  db: Database;
  drop(): Promise<void>;
}

export function databaseUrl(name: string, serverUrl = testServerUrl): string {
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

/** Creates an empty, migrated database with a unique name; `drop()` removes it. */
export async function createTestDatabase(options: { poolMax?: number } = {}): Promise<TestDatabase> {
  const logger = createLogger('silent');
  const name = `credits_test_${randomBytes(6).toString('hex')}`;
  const admin = connectDatabase({ connectionString: testServerUrl, poolMax: 1, logger });
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.close();
  const url = databaseUrl(name);
  const db = connectDatabase({ connectionString: url, poolMax: options.poolMax ?? 10, logger });
  await runMigrations(db, logger);
  return {
    url,
    db,
    async drop() {
      await db.close();
      const cleanup = connectDatabase({ connectionString: testServerUrl, poolMax: 1, logger });
      await cleanup.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await cleanup.close();
    },
  };
}
