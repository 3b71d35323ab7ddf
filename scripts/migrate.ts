/** Applies pending SQL migrations: see `usage`. */
import { loadConfig } from '../service/config';
import { connectDatabase, describeError } from '../service/db';
import { createLogger } from '../service/logger';
import { runMigrations } from '../service/migrations';
import { parseCommandLine } from './lib/cli';

const usage = `
Usage: npm run migrate            (in the container: node dist/scripts/migrate.js)

Applies the pending SQL migrations (service/migrations/) to the database of DATABASE_URL or
DATABASE_URL_FILE, and says which. The service also migrates at start, under the same advisory lock, so
running both at once is safe. \`npm start\` without DATABASE_URL migrates its embedded database itself.

Options:
  -h, --help   show this text
`;

async function main(): Promise<void> {
  parseCommandLine({ usage, options: {} });
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
