import { createHash, randomBytes } from 'node:crypto';
import type { Queryable } from '../db';
import type { Session } from './sessionTokens';

/**
 * A stream ticket stands in for the session token in `?ticket=` (EventSource cannot send headers): random,
 * valid for a minute, usable once, bound to its user. Kept in PostgreSQL, so that any replica behind the
 * load balancer redeems a ticket another one made; only its hash is stored.
 */
export const ticketLifetimeSeconds = 60;
const ticketBytes = 32;

export interface StreamTicket {
  ticket: string;
  expiresAt: Date;
}

// Expired tickets are swept by the statement that makes a new one (the expiry index keeps it cheap).
const createSql = `
  WITH swept AS (DELETE FROM stream_tickets WHERE expires_at < now())
  INSERT INTO stream_tickets (ticket_hash, user_id, session_expires_at, expires_at)
  VALUES ($1, $2, to_timestamp($3::double precision / 1000), LEAST(now() + make_interval(secs => $4), to_timestamp($3::double precision / 1000)))
  RETURNING expires_at AS "expiresAt"`;

export async function createStreamTicket(db: Queryable, session: Session): Promise<StreamTicket> {
  const ticket = randomBytes(ticketBytes).toString('base64url');
  const { rows } = await db.query<{ expiresAt: Date }>(createSql, [hash(ticket), session.userId, session.expiresAtMillis, ticketLifetimeSeconds]);
  return { ticket, expiresAt: rows[0]!.expiresAt };
}

// One statement: of two replicas redeeming the same ticket at once, exactly one gets the row.
const redeemSql = `
  DELETE FROM stream_tickets WHERE ticket_hash = $1 AND expires_at > now()
  RETURNING user_id AS "userId", session_expires_at AS "sessionExpiresAt"`;

/** The session the ticket was made for, or undefined when it is unknown, used or expired. */
export async function redeemStreamTicket(db: Queryable, ticket: string): Promise<Session | undefined> {
  const { rows } = await db.query<{ userId: string; sessionExpiresAt: Date }>(redeemSql, [hash(ticket)]);
  const row = rows[0];
  return row ? { userId: row.userId, expiresAtMillis: row.sessionExpiresAt.getTime() } : undefined;
}

function hash(ticket: string): Buffer {
  return createHash('sha256').update(ticket, 'utf8').digest();
}
