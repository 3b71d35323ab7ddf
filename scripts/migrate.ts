/**
 * Usage: npm run migrate   (in the container: node dist/scripts/migrate.js)
 * Applies pending SQL migrations to DATABASE_URL. The service also does this at start, under the same
 * advisory lock, so running both at once is safe.
 */
import { loadConfig } from '../service/config';
import { connectDatabase, describeError } from '../service/db';
import { createLogger } from '../service/logger';
import { runMigrations } from '../service/migrations';

async function main(): Promise<void> {
  const config = loadConfig(process.env);
  if (!config.databaseUrl) throw new Error('Set DATABASE_URL (or DATABASE_URL_FILE); `npm start` migrates its embedded database itself.');
  const logger = createLogger(config.logLevel);
  const db = connectDatabase({ connectionString: config.databaseUrl, passwordFile: config.databasePasswordFile, poolMax: 1, logger });
  try {
    const applied = await runMigrations(db, logger);
    console.error(applied.length ? `applied: ${applied.join(', ')}` : 'database is up to date');
  } finally {
    await db.close();
  }
}

main().catch((error: unknown) => {
  console.error(`Migration failed: ${describeError(error).message}`);
  process.exit(1);
});
