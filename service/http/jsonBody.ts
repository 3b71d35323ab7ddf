import type Koa from 'koa';
import getRawBody from 'raw-body';

/** The billing API's request bodies are a few fields: anything larger is not one of ours. */
export const maxJsonBodyBytes = 16 * 1024;

/**
 * The request's JSON object, with only the named fields: a wrong content type (415), a body too large (413),
 * not JSON or not an object (400), or a field the route does not take (400, naming it) are refused before
 * anything happens. An empty body is an empty object.
 */
export async function readJsonObject(ctx: Koa.Context, allowedFields: readonly string[]): Promise<Record<string, unknown>> {
  const length = ctx.get('content-length');
  const hasBody = (length !== '' && length !== '0') || ctx.get('transfer-encoding') !== '';
  if (!hasBody) return {};
  if (!ctx.is('application/json')) {
    ctx.throw(415, `Send the body as JSON with "Content-Type: application/json" (got "${ctx.get('content-type') || 'none'}").`, { reason: 'unsupported_media_type' });
  }
  let text: string;
  try {
    text = await getRawBody(ctx.req, { limit: maxJsonBodyBytes, length: length || undefined, encoding: 'utf8' });
  } catch (error) {
    if ((error as { type?: string }).type === 'entity.too.large') ctx.throw(413, `The body is larger than ${maxJsonBodyBytes} bytes.`, { reason: 'body_too_large' });
    return ctx.throw(400, 'The request body could not be read completely.', { reason: 'body_unreadable' });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return ctx.throw(400, 'The body is not valid JSON.', { reason: 'invalid_json' });
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) ctx.throw(400, 'The body must be a JSON object.', { reason: 'invalid_body' });
  const body = parsed as Record<string, unknown>;
  const unknown = Object.keys(body).filter((field) => !allowedFields.includes(field));
  if (unknown.length > 0) {
    ctx.throw(400, `Unknown field${unknown.length > 1 ? 's' : ''} ${unknown.map((field) => `"${field}"`).join(', ')}; this route takes ${allowedFields.map((field) => `"${field}"`).join(', ') || 'no fields'}.`, {
      reason: 'unknown_field',
    });
  }
  return body;
}

/** A string field, trimmed; undefined when absent; 400 naming the field when it is not a non-empty string up to `maxLength`. */
export function optionalText(ctx: Koa.Context, body: Record<string, unknown>, field: string, maxLength: number): string | undefined {
  const value = body[field];
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || !value.trim() || value.length > maxLength) {
    return ctx.throw(400, `"${field}" must be a non-empty string of at most ${maxLength} characters.`, { reason: 'invalid_field' });
  }
  return value.trim();
}

export function requiredText(ctx: Koa.Context, body: Record<string, unknown>, field: string, maxLength: number): string {
  return optionalText(ctx, body, field, maxLength) ?? ctx.throw(400, `"${field}" is required.`, { reason: 'missing_field' });
}
