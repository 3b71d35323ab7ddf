/** Changes the service's database password while it runs: see `usage`. */
import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';
import { ConfigError, loadConfig } from '../service/config';
import { connectDatabase, describeError } from '../service/db';
import { createLogger } from '../service/logger';
import { parseCommandLine } from './lib/cli';
import { replaceFileKeepingOwner } from './lib/replaceFile';

const usage = `
Usage: npm run rotate-database-password -- [--password-file FILE] [--dry-run] [--json] < new-password
       (in the container: node dist/scripts/rotate-database-password.js …)

Gives the service's database role a new password and writes it into the password file the replicas read
for every new connection (DATABASE_PASSWORD_FILE), one step right after the other: open connections stay
open, new ones use the new password, and a replica that tries to log in between the two steps tries again
for up to 10 s. Connects as the service does (DATABASE_URL or DATABASE_URL_FILE, and the current password
from the password file), as the role itself: no superuser needed.

The new password comes on stdin (e.g. from \`openssl rand -base64 32\`): at least 16 printable ASCII
characters, no spaces. It is sent to PostgreSQL only as a SCRAM-SHA-256 verifier made here (as psql's
\\password does), so it never reaches the server's logs, and it is never printed.

Options:
  --password-file FILE  the file to update (default $DATABASE_PASSWORD_FILE)
  --dry-run             check the connection and the new password, change nothing
  --json                print the result as one JSON object on stdout
  -h, --help            show this text

Exit codes: 0 done; 1 failed (nothing changed, unless the message says the role changed and the file did
not: then write the new password into the file by hand at once); 2 usage.
`;

const scramIterations = 4096;
const minimumPasswordLength = 16;

/** The verifier PostgreSQL stores for a SCRAM-SHA-256 password (RFC 5802/7677), as libpq's PQencryptPasswordConn makes it. */
export function scramVerifier(password: string, salt: Buffer = randomBytes(16)): string {
  const salted = pbkdf2Sync(password, salt, scramIterations, 32, 'sha256');
  const clientKey = createHmac('sha256', salted).update('Client Key').digest();
  const storedKey = createHash('sha256').update(clientKey).digest();
  const serverKey = createHmac('sha256', salted).update('Server Key').digest();
  return `SCRAM-SHA-256$${scramIterations}:${salt.toString('base64')}$${storedKey.toString('base64')}:${serverKey.toString('base64')}`;
}

async function readNewPassword(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  const password = Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
  // Printable ASCII only: SASLprep leaves it unchanged, so every client computes the same proof.
  if (password.length < minimumPasswordLength || !/^[\x21-\x7e]+$/.test(password)) {
    throw new Error(`stdin must hold the new password: at least ${minimumPasswordLength} printable ASCII characters without spaces (e.g. openssl rand -base64 32)`);
  }
  return password;
}

async function main(): Promise<number> {
  const cli = parseCommandLine({
    usage,
    options: { 'password-file': { type: 'string' }, 'dry-run': { type: 'boolean', default: false }, json: { type: 'boolean', default: false } },
  });
  const config = loadConfig(process.env);
  if (!config.databaseUrl) throw new ConfigError('set DATABASE_URL (or DATABASE_URL_FILE) to the database the service uses');
  const passwordFile =
    cli.values['password-file'] ?? config.databasePasswordFile ?? cli.fail('give --password-file, or set DATABASE_PASSWORD_FILE as the service has it: the replicas re-read that file, not DATABASE_URL');
  const newPassword = await readNewPassword();

  const db = connectDatabase({ connectionString: config.databaseUrl, passwordFile, poolMax: 1, logger: createLogger('silent') });
  let roleChanged = false;
  try {
    const { rows } = await db.query<{ role: string }>('SELECT current_user AS role');
    const role = rows[0]!.role;
    if (cli.values['dry-run']) {
      process.stderr.write(`would change the password of role ${role} and write it into ${passwordFile}\n`);
      if (cli.values.json) process.stdout.write(`${JSON.stringify({ ok: true, dry_run: true, role, password_file: passwordFile })}\n`);
      return 0;
    }
    const verifier = scramVerifier(newPassword);
    // Utility statements take no parameters; the verifier is base64 and punctuation only, never a quote.
    if (!/^[A-Za-z0-9+/=:$-]+$/.test(verifier)) throw new Error('unexpected characters in the SCRAM verifier');
    await db.query(`ALTER ROLE CURRENT_USER PASSWORD '${verifier}'`);
    roleChanged = true;
    await replaceFileKeepingOwner(passwordFile, `${newPassword}\n`);
    process.stderr.write(`role ${role} has a new password, and ${passwordFile} holds it; the replicas use it for their next connections\n`);
    if (cli.values.json) process.stdout.write(`${JSON.stringify({ ok: true, role, password_file: passwordFile })}\n`);
    return 0;
  } catch (error) {
    if (roleChanged) {
      throw new Error(`the role's password changed but ${passwordFile} could not be written (${describeError(error).message}): write the new password into it now, or new connections will fail`, { cause: error });
    }
    throw error;
  } finally {
    await db.close();
  }
}

if (require.main === module) {
  main().then(
    (code) => process.exit(code),
    (error: unknown) => {
      const message = error instanceof ConfigError ? `Configuration error: ${error.message}` : describeError(error).message;
      process.stderr.write(`rotate-database-password: ${message}\n`);
      if (process.argv.includes('--json')) process.stdout.write(`${JSON.stringify({ ok: false, error: message })}\n`);
      process.exit(1);
    },
  );
}
