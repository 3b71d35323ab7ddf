import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import type { Database } from './db';
import type { Logger } from './logger';

const migrationsDir = path.join(__dirname, 'migrations');
/** Any fixed number: every replica takes the same lock, so only one of them migrates at a time. */
const migrationLockKey = 0x5717_c0de;

/** The migrations this code expects, by file name, in the order they apply (what schema_migrations records). */
export async function migrationFiles(): Promise<string[]> {
  return (await readdir(migrationsDir)).filter((name) => name.endsWith('.sql')).sort();
}

/** Applies the `.sql` files of `service/migrations` not applied yet, in name order, in one transaction. */
export async function runMigrations(db: Database, logger: Logger): Promise<string[]> {
  const files = await migrationFiles();
  return db.withTransaction(async (tx) => {
    await tx.query('SELECT pg_advisory_xact_lock($1)', [migrationLockKey]);
    await tx.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
      name text PRIMARY KEY,
      applied_at timestamptz NOT NULL DEFAULT now()
    )`);
    const { rows } = await tx.query<{ name: string }>('SELECT name FROM schema_migrations');
    const applied = new Set(rows.map((row) => row.name));
    const pending = files.filter((name) => !applied.has(name));
    for (const name of pending) {
      await tx.query(await readFile(path.join(migrationsDir, name), 'utf8'));
      await tx.query('INSERT INTO schema_migrations (name) VALUES ($1)', [name]);
      logger.info({ migration: name }, 'applied database migration');
    }
    return pending;
  });
}
