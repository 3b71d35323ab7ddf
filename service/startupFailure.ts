/**
 * Why the service could not start, as one line naming the cause and the fix, with an exit code per cause
 * so that a person, a script or a supervisor can tell them apart (the README lists them). Configuration
 * problems are ConfigError (config.ts), exit 78.
 */
export const startupExitCodes = {
  /** EX_CONFIG: a setting is missing or invalid (ConfigError). */
  configuration: 78,
  /** EX_UNAVAILABLE: PostgreSQL cannot be reached, or refuses the login or the database name. */
  database: 69,
  /** EX_DATAERR: a migration failed (rolled back: the database is unchanged). */
  migration: 65,
  /** EX_TEMPFAIL: the port is taken (or not ours to take). */
  listen: 75,
  /** EX_CANTCREAT: another `npm start` uses the same data dir. */
  dataDirInUse: 73,
  /** EX_OSERR: the embedded development PostgreSQL could not be created or started. */
  embeddedDatabase: 71,
  /** EX_SOFTWARE: anything else, i.e. a bug. */
  unexpected: 70,
} as const;

export class StartupError extends Error {
  override name = 'StartupError';
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
  }
}

function codeOf(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | undefined)?.code;
  return typeof code === 'string' ? code : undefined;
}

/** Node reports a refused connection to a name with several addresses as an AggregateError with no message. */
function messageOf(error: unknown): string {
  if (error instanceof AggregateError && !error.message) return error.errors.map(messageOf).join('; ');
  return error instanceof Error ? error.message : String(error);
}

/** The first connection to the database failed: say where we tried (never with the password) and what to check. */
export function databaseStartupError(error: unknown, connectionString: string, embedded: boolean): StartupError {
  const fix = embedded ? 'The embedded PostgreSQL under the data dir did not answer: start again, or set DATABASE_URL.' : 'Check DATABASE_URL (or DATABASE_URL_FILE).';
  return new StartupError(`Cannot start: ${databaseConnectionProblem(error, connectionString)}. ${fix}`, startupExitCodes.database);
}

/** Why a connection to the database failed, naming the server (never the password) and what to change. */
export function databaseConnectionProblem(error: unknown, connectionString: string): string {
  const url = new URL(connectionString);
  const server = `${url.hostname || 'localhost'}:${url.port || '5432'}`;
  const database = decodeURIComponent(url.pathname.slice(1)) || decodeURIComponent(url.username) || 'postgres';
  const code = codeOf(error);
  if (code === 'ECONNREFUSED') return `nothing accepts connections at ${server} (connection refused): wrong host or port, or PostgreSQL is not running`;
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return `the database host "${url.hostname}" does not resolve`;
  if (code === 'ETIMEDOUT' || code === 'EHOSTUNREACH' || /timeout/i.test(messageOf(error))) return `no answer from ${server}: wrong host or port, or a firewall in between`;
  if (code === '3D000') return `PostgreSQL at ${server} has no database "${database}": create it (createdb) or fix the name`;
  if (code === '28P01' || code === '28000') return `PostgreSQL at ${server} refused the login (${messageOf(error)}): fix the user or password`;
  return `the database at ${server}/${database} cannot be used (${messageOf(error)}${code ? `, ${code}` : ''})`;
}

export function migrationStartupError(error: unknown): StartupError {
  return new StartupError(
    `Cannot start: applying the database migrations failed (${messageOf(error)}). They run in one transaction, so the database is unchanged: fix the cause and start again.`,
    startupExitCodes.migration,
  );
}

export function listenStartupError(error: unknown, host: string, port: number): StartupError {
  const code = codeOf(error);
  let message: string;
  if (code === 'EADDRINUSE') message = `port ${port} on ${host} is already in use (another npm start, or another program). Stop it, or set PORT to a free port.`;
  else if (code === 'EACCES') message = `not allowed to listen on port ${port} on ${host}. Set PORT to a port from 1024 up.`;
  else if (code === 'EADDRNOTAVAIL' || code === 'ENOTFOUND') message = `HOST "${host}" is not an address of this machine. Set HOST to one of its addresses (127.0.0.1, or 0.0.0.0 for all).`;
  else message = `cannot listen on ${host}:${port} (${messageOf(error)}). Check PORT and HOST.`;
  return new StartupError(`Cannot start: ${message}`, startupExitCodes.listen);
}

/** Anything not foreseen above: still one line, with the error's own message. */
export function unexpectedStartupError(error: unknown): StartupError {
  return new StartupError(`Cannot start: ${messageOf(error)} (unexpected; please report it with the lines above).`, startupExitCodes.unexpected);
}
