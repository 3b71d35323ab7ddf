import { readFile } from 'node:fs/promises';
import pg from 'pg';
import { parseIntoClientConfig } from 'pg-connection-string';
import type { Logger } from './logger';

/**
 * A statement each connection parses and plans once, then only binds and executes: for the hot paths, where
 * parsing and planning the call again is a fifth of PostgreSQL's work per event. One name, one text.
 */
export interface PreparedStatement {
  name: string;
  text: string;
}

/** What business code sees of a connection: parameterised queries, nothing else. */
export interface Queryable {
  query<Row extends object = Record<string, unknown>>(sql: string | PreparedStatement, params?: readonly unknown[]): Promise<{ rows: Row[]; rowCount: number }>;
}

export interface Database extends Queryable {
  /** Runs `work` in one transaction on one connection; retries on serialization failure or deadlock. */
  withTransaction<T>(work: (tx: Queryable) => Promise<T>): Promise<T>;
  /** Calls `onNotification(payload)` for each NOTIFY on `channel`, reconnecting after failures. */
  listen(channel: string, onNotification: (payload: string) => void, onReconnect?: () => void): Promise<() => Promise<void>>;
  /**
   * Runs `work` while this process holds the session-level advisory lock `key`, taken with pg_try_advisory_lock
   * on a connection of its own (not one of the pool's, which `work` uses): `{ acquired: false }` at once when
   * another session holds it. Should that connection drop meanwhile, the server releases the lock while `work`
   * still runs; use it to avoid duplicate work, never as the only guard of correctness.
   */
  withExclusiveLock<T>(key: number, work: () => Promise<T>): Promise<{ acquired: false } | { acquired: true; value: T }>;
  ping(): Promise<void>;
  close(): Promise<void>;
}

export interface DatabaseOptions {
  connectionString: string;
  poolMax: number;
  logger: Logger;
  /**
   * A file holding the password, read again for every new connection (it wins over a password in the
   * URL): the password can be rotated while the service runs, ALTER ROLE first, then the file.
   */
  passwordFile?: string;
  /** Receives the server's notices (RAISE NOTICE; auto_explain's plans at auto_explain.log_level = notice). */
  onNotice?: (message: string) => void;
}

const connectionTimeoutMillis = 5_000;
const idleTimeoutMillis = 30_000;
const statementTimeoutMillis = 15_000;
const maxTransactionAttempts = 3;
const listenReconnectDelayMillis = 1_000;
/**
 * With a password file, a login refused for the password is tried again (the file read afresh) for this
 * long: the role's password and the file change one after the other, never at the same instant.
 */
const passwordChangeWindowMillis = 10_000;
const passwordRetryDelayMillis = 100;
const invalidPasswordSqlState = '28P01';

// Bigint (int8) columns hold credit counts and cents, far below 2^53: read them as numbers.
pg.types.setTypeParser(pg.types.builtins.INT8, (value) => Number(value));

/** Where and as whom to connect; the password from the file, when there is one, read at each connection. */
function connectionConfig(connectionString: string, passwordFile: string | undefined): pg.ClientConfig {
  if (passwordFile === undefined) return { connectionString };
  // pg lets a connection string's password (even an absent one) override `password`: take the URL apart.
  const { password: _inUrl, ...config } = parseIntoClientConfig(connectionString);
  return { ...config, password: () => readPasswordFile(passwordFile) };
}

async function readPasswordFile(passwordFile: string): Promise<string> {
  const password = (await readFile(passwordFile, 'utf8')).trim();
  if (!password) throw new Error(`DATABASE_PASSWORD_FILE ${passwordFile} is empty: write the database password into it.`);
  return password;
}

export function connectDatabase({ connectionString, poolMax, logger, passwordFile, onNotice }: DatabaseOptions): Database {
  const connection = connectionConfig(connectionString, passwordFile);
  const pool = new pg.Pool({
    ...connection,
    max: poolMax,
    connectionTimeoutMillis,
    idleTimeoutMillis,
    statement_timeout: statementTimeoutMillis,
    application_name: 'stripe-credits-webhook',
  });
  if (onNotice) pool.on('connect', (client) => client.on('notice', (notice) => onNotice(notice.message ?? '')));
  let closing = false;
  // Without this listener an idle client's dropped connection (database restart) kills the process. Once
  // close() is called, a connection the server drops before the pool finished ending it is expected.
  pool.on('error', (error) => {
    if (!closing) logger.warn({ err: describeError(error) }, 'idle database connection lost');
  });

  /** A pooled connection; see passwordChangeWindowMillis for why a refused password is tried again. */
  async function connect(): Promise<pg.PoolClient> {
    const deadline = Date.now() + passwordChangeWindowMillis;
    for (let attempt = 1; ; attempt++) {
      try {
        return await pool.connect();
      } catch (error) {
        const passwordRefused = passwordFile !== undefined && (error as { code?: unknown }).code === invalidPasswordSqlState;
        if (!passwordRefused || Date.now() >= deadline) throw error;
        if (attempt === 1) logger.warn('database refused the password: reading DATABASE_PASSWORD_FILE again shortly (a rotation in progress?)');
        await new Promise((resolve) => setTimeout(resolve, passwordRetryDelayMillis));
      }
    }
  }

  async function query<Row extends object>(sql: string | PreparedStatement, params?: readonly unknown[]) {
    const client = await connect();
    // A checked-out client has no 'error' listener of the pool's: a connection cut during the query would
    // emit an unhandled 'error' and kill the process (every hot-path event is one such query).
    const onConnectionError = (error: Error) => logger.warn({ err: describeError(error) }, 'database connection lost during a query');
    client.on('error', onConnectionError);
    try {
      const result = toQueryResult<Row>(await client.query(queryConfig(sql, params)));
      client.removeListener('error', onConnectionError);
      client.release();
      return result;
    } catch (error) {
      // As pool.query does: a connection whose query failed is not reused.
      client.removeListener('error', onConnectionError);
      client.release(error instanceof Error ? error : true);
      throw error;
    }
  }

  async function withTransaction<T>(work: (tx: Queryable) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      const client = await connect();
      let clientBroken = false;
      // The pool listens for errors on idle clients only: without this listener, a connection dropped while
      // checked out but between two queries emits an unhandled 'error' and kills the process.
      const onConnectionError = (error: Error) => {
        clientBroken = true;
        logger.warn({ err: describeError(error) }, 'database connection lost during a transaction');
      };
      client.on('error', onConnectionError);
      try {
        await client.query('BEGIN');
        const tx: Queryable = {
          async query<Row extends object>(sql: string | PreparedStatement, params?: readonly unknown[]) {
            return toQueryResult<Row>(await client.query(queryConfig(sql, params)));
          },
        };
        const result = await work(tx);
        await client.query('COMMIT');
        return result;
      } catch (error) {
        clientBroken ||= isDatabaseUnavailable(error);
        await client.query('ROLLBACK').catch(() => {
          clientBroken = true;
        });
        if (attempt < maxTransactionAttempts && isRetryableConflict(error)) continue;
        throw error;
      } finally {
        // A connection that failed mid-transaction is discarded rather than reused.
        client.removeListener('error', onConnectionError);
        client.release(clientBroken);
      }
    }
  }

  async function listen(channel: string, onNotification: (payload: string) => void, onReconnect?: () => void) {
    let client: pg.Client | undefined;
    let stopped = false;
    let reconnectTimer: NodeJS.Timeout | undefined;

    const connect = async (isReconnect: boolean): Promise<void> => {
      const candidate = new pg.Client({ ...connection, connectionTimeoutMillis, application_name: 'stripe-credits-webhook-listen' });
      candidate.on('error', (error) => {
        if (stopped) return;
        logger.warn({ err: describeError(error), channel }, 'database notification connection lost; reconnecting');
        scheduleReconnect();
      });
      candidate.on('notification', (message) => {
        if (message.channel === channel && message.payload !== undefined) onNotification(message.payload);
      });
      try {
        await candidate.connect();
        await candidate.query(`LISTEN ${pg.escapeIdentifier(channel)}`);
      } catch (error) {
        await candidate.end().catch(() => undefined);
        throw error;
      }
      if (stopped) {
        await candidate.end().catch(() => undefined);
        return;
      }
      client = candidate;
      // Notifications sent while we were disconnected are lost: let the caller resynchronise.
      if (isReconnect) onReconnect?.();
    };

    const scheduleReconnect = () => {
      if (stopped || reconnectTimer) return;
      const broken = client;
      client = undefined;
      broken?.end().catch(() => undefined);
      reconnectTimer = setTimeout(() => {
        reconnectTimer = undefined;
        connect(true).catch((error: unknown) => {
          logger.warn({ err: describeError(error), channel }, 'database notification reconnect failed; retrying');
          scheduleReconnect();
        });
      }, listenReconnectDelayMillis);
      reconnectTimer.unref();
    };

    await connect(false);
    return async () => {
      stopped = true;
      if (reconnectTimer) clearTimeout(reconnectTimer);
      await client?.end().catch(() => undefined);
    };
  }

  async function withExclusiveLock<T>(key: number, work: () => Promise<T>): Promise<{ acquired: false } | { acquired: true; value: T }> {
    const client = new pg.Client({ ...connection, connectionTimeoutMillis, application_name: 'stripe-credits-webhook-lock' });
    // A dropped connection ends the lock; the error must not end the process.
    client.on('error', (error) => logger.warn({ err: describeError(error), lockKey: key }, 'database connection holding an advisory lock lost'));
    await client.connect();
    try {
      const { rows } = await client.query<{ acquired: boolean }>('SELECT pg_try_advisory_lock($1) AS acquired', [key]);
      if (!rows[0]?.acquired) return { acquired: false };
      return { acquired: true, value: await work() };
    } finally {
      // Closing the session releases its advisory locks.
      await client.end().catch(() => undefined);
    }
  }

  return {
    query,
    withTransaction,
    withExclusiveLock,
    listen,
    async ping() {
      await query('SELECT 1');
    },
    async close() {
      closing = true;
      await pool.end();
    },
  };
}

/** A fresh config per call: pg writes the values into the object it is given. */
function queryConfig(sql: string | PreparedStatement, params: readonly unknown[] | undefined): pg.QueryConfig {
  const values = params as unknown[] | undefined;
  return typeof sql === 'string' ? { text: sql, values } : { name: sql.name, text: sql.text, values };
}

function toQueryResult<Row extends object>(result: pg.QueryResult): { rows: Row[]; rowCount: number } {
  return { rows: result.rows as Row[], rowCount: result.rowCount ?? 0 };
}

const unavailableErrorCodes = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH']);

/**
 * True when the database cannot be reached or will not let us in (as opposed to a query being wrong): answer
 * 503 and retry later. A refused login (a password rotation gone wrong, the role or database dropped) is ours
 * to fix, and nothing was applied, so Stripe's retry is what is wanted.
 */
export function isDatabaseUnavailable(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string') {
    if (unavailableErrorCodes.has(code)) return true;
    // SQLSTATE class 08 (connection exception), class 28 (login refused), 3D000 (no such database),
    // 57P01-57P03 (shutdown, cannot connect now), 53300 (too many connections).
    if (/^(08|28)/.test(code) || code === '3D000' || /^57P0[123]$/.test(code) || code === '53300') return true;
  }
  return /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error|connection is closed/i.test(
    error.message,
  );
}

/** A serialization failure or deadlock: the transaction can simply run again. */
export function isRetryableConflict(error: unknown): boolean {
  const code = (error as { code?: unknown } | undefined)?.code;
  return code === '40001' || code === '40P01';
}

/** Error summary safe for logs: never the query parameters. */
export function describeError(error: unknown): { message: string; code?: string } {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    return typeof code === 'string' ? { message: error.message, code } : { message: error.message };
  }
  return { message: String(error) };
}
