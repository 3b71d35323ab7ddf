/**
 * Stripe v1 API conventions for the local Stripe server (server.ts): error bodies, reading typed
 * parameters out of a decoded form, list pagination and `created` range filters. Messages and codes
 * follow what api.stripe.com answers, so client code sees the errors it would see in production.
 */
import type { FormObject, FormValue } from './form';

export type StripeErrorType = 'invalid_request_error' | 'api_error' | 'idempotency_error';

export interface StripeErrorBody {
  error: { type: StripeErrorType; message: string; param?: string; code?: string; doc_url?: string };
}

/** One failed API call: an HTTP status plus the Stripe-shaped `{ error }` body. */
export class StripeApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly details: { type?: StripeErrorType; param?: string; code?: string; docUrl?: string } = {},
  ) {
    super(message);
    this.name = 'StripeApiError';
  }

  body(): StripeErrorBody {
    const { type = this.status >= 500 ? 'api_error' : 'invalid_request_error', param, code, docUrl } = this.details;
    return {
      error: {
        type,
        message: this.message,
        ...(param === undefined ? {} : { param }),
        ...(code === undefined ? {} : { code }),
        ...(docUrl === undefined ? {} : { doc_url: docUrl }),
      },
    };
  }
}

export function invalidParam(param: string, message: string, code?: string): StripeApiError {
  return new StripeApiError(400, message, { param, code });
}

/** `No such webhook endpoint: 'we_…'`, naming the other mode when the object lives there (as Stripe does). */
export function resourceMissing(
  kind: string,
  id: string,
  options: { param?: string; status?: number; existsInLivemode?: boolean } = {},
): StripeApiError {
  let message = `No such ${kind}: '${id}'`;
  if (options.existsInLivemode !== undefined) {
    const [found, used] = options.existsInLivemode ? ['live', 'test'] : ['test', 'live'];
    message += `; a similar object exists in ${found} mode, but a ${used} mode key was used to make this request.`;
  }
  return new StripeApiError(options.status ?? 404, message, { param: options.param ?? 'id', code: 'resource_missing' });
}

// ---------------------------------------------------------------------------------------------
// Parameters

/** Stripe answers 400 to any parameter an endpoint does not take; so do we. `expand` is always accepted. */
export function rejectUnknownParams(params: FormObject, allowed: readonly string[], parent?: string): void {
  for (const name of Object.keys(params)) {
    if ((parent !== undefined || name !== 'expand') && !allowed.includes(name)) {
      const param = parent === undefined ? name : `${parent}[${name}]`;
      throw invalidParam(param, `Received unknown parameter: ${param}`, 'parameter_unknown');
    }
  }
}

function requireStringValue(name: string, value: FormValue): string {
  if (typeof value !== 'string') {
    throw invalidParam(name, `Invalid ${name}: must be a string`);
  }
  return value;
}

export function stringParam(params: FormObject, name: string): string | undefined {
  const value = params[name];
  return value === undefined ? undefined : requireStringValue(name, value);
}

export function requiredStringParam(params: FormObject, name: string): string {
  const value = stringParam(params, name);
  if (value === undefined || value === '') {
    throw invalidParam(name, `Missing required param: ${name}.`, 'parameter_missing');
  }
  return value;
}

export function stringArrayParam(params: FormObject, name: string): string[] | undefined {
  const value = params[name];
  if (value === undefined) {
    return undefined;
  }
  if (!Array.isArray(value)) {
    throw invalidParam(name, `Invalid array for ${name}`);
  }
  return value.map((element, index) => requireStringValue(`${name}[${index}]`, element));
}

export function booleanParam(params: FormObject, name: string): boolean | undefined {
  const value = stringParam(params, name);
  if (value === undefined) {
    return undefined;
  }
  if (value !== 'true' && value !== 'false') {
    throw invalidParam(name, `Invalid boolean: ${value}`);
  }
  return value === 'true';
}

export function integerParam(params: FormObject, name: string): number | undefined {
  const value = stringParam(params, name);
  return value === undefined ? undefined : parseInteger(name, value);
}

function parseInteger(name: string, value: string): number {
  if (!/^-?\d+$/.test(value)) {
    throw invalidParam(name, `Invalid integer: ${value}`, 'parameter_invalid_integer');
  }
  return Number(value);
}

/**
 * Metadata as an update: `null` clears everything (`metadata=` on the wire), otherwise each key maps
 * to its new value or to `null` (an empty string), which deletes that key.
 */
export function metadataParam(params: FormObject, name = 'metadata'): Record<string, string | null> | null | undefined {
  const value = params[name];
  if (value === undefined) {
    return undefined;
  }
  if (value === '') {
    return null;
  }
  if (typeof value === 'string' || Array.isArray(value)) {
    throw invalidParam(name, `Invalid object for ${name}`);
  }
  const update: Record<string, string | null> = {};
  for (const [key, entry] of Object.entries(value)) {
    const text = requireStringValue(`${name}[${key}]`, entry);
    update[key] = text === '' ? null : text;
  }
  return update;
}

export function applyMetadataUpdate(
  current: Record<string, string>,
  update: Record<string, string | null> | null,
): Record<string, string> {
  if (update === null) {
    return {};
  }
  const next = { ...current };
  for (const [key, value] of Object.entries(update)) {
    if (value === null) {
      delete next[key];
    } else {
      next[key] = value;
    }
  }
  return next;
}

// ---------------------------------------------------------------------------------------------
// Lists

export const DEFAULT_LIST_LIMIT = 10;
export const MAX_LIST_LIMIT = 100;
export const LIST_PARAMS = ['limit', 'starting_after', 'ending_before'] as const;

export interface StripeList<T> {
  object: 'list';
  data: T[];
  has_more: boolean;
  url: string;
}

/**
 * One page of `items` (already in Stripe's order, newest first for most lists): `limit` items right
 * after the `starting_after` cursor, or right before the `ending_before` one.
 */
export function listPage<T extends { id: string }>(
  items: readonly T[],
  params: FormObject,
  url: string,
  kind: string,
): StripeList<T> {
  const limit = integerParam(params, 'limit') ?? DEFAULT_LIST_LIMIT;
  if (limit < 1 || limit > MAX_LIST_LIMIT) {
    throw invalidParam('limit', `Invalid limit: must be between 1 and ${MAX_LIST_LIMIT}`);
  }
  const startingAfter = stringParam(params, 'starting_after');
  const endingBefore = stringParam(params, 'ending_before');
  if (startingAfter !== undefined && endingBefore !== undefined) {
    const message = 'You may only specify one of these parameters: ending_before, starting_after.';
    throw invalidParam('starting_after', message);
  }
  const cursorIndex = (param: string, id: string): number => {
    const index = items.findIndex((item) => item.id === id);
    if (index < 0) {
      throw resourceMissing(kind, id, { param, status: 400 });
    }
    return index;
  };
  if (endingBefore !== undefined) {
    const end = cursorIndex('ending_before', endingBefore);
    const start = Math.max(0, end - limit);
    return { object: 'list', data: items.slice(start, end), has_more: start > 0, url };
  }
  const start = startingAfter === undefined ? 0 : cursorIndex('starting_after', startingAfter) + 1;
  return { object: 'list', data: items.slice(start, start + limit), has_more: start + limit < items.length, url };
}

const RANGE_OPERATORS = ['gt', 'gte', 'lt', 'lte'] as const;

/** `created=123` or `created[gte]=…&created[lt]=…` (Unix seconds) as a predicate. */
export function rangeFilter(params: FormObject, name: string): (value: number) => boolean {
  const value = params[name];
  if (value === undefined) {
    return () => true;
  }
  if (typeof value === 'string') {
    const exact = parseInteger(name, value);
    return (candidate) => candidate === exact;
  }
  if (Array.isArray(value)) {
    throw invalidParam(name, `Invalid ${name}: must be an integer or a hash of gt, gte, lt, lte`);
  }
  rejectUnknownParams(value, RANGE_OPERATORS, name);
  const bound = (operator: (typeof RANGE_OPERATORS)[number]): number | undefined => {
    const text = value[operator];
    return text === undefined ? undefined : parseInteger(`${name}[${operator}]`, requireStringValue(name, text));
  };
  const [gt, gte, lt, lte] = RANGE_OPERATORS.map(bound);
  return (candidate) =>
    (gt === undefined || candidate > gt) &&
    (gte === undefined || candidate >= gte) &&
    (lt === undefined || candidate < lt) &&
    (lte === undefined || candidate <= lte);
}
