/**
 * Decodes Stripe's v1 request encoding (an `application/x-www-form-urlencoded` body or a query string
 * with bracket notation) into nested objects and arrays, the inverse of stripe-node's
 * `queryStringifyRequestData`:
 *
 *   enabled_events[0]=a&enabled_events[1]=b&metadata[stack]=test&created[gte]=1700000000
 *   → { enabled_events: ['a', 'b'], metadata: { stack: 'test' }, created: { gte: '1700000000' } }
 *
 * Every leaf stays a string (Stripe parses types per parameter); `null` is sent by stripe-node as an
 * empty string. `types[]=a` (empty brackets) appends, as Stripe's own parser accepts.
 */

export type FormValue = string | FormValue[] | FormObject;
export interface FormObject {
  [key: string]: FormValue;
}

/** A malformed form: conflicting keys, a broken bracket path or a forbidden key name. */
export class FormDecodeError extends Error {
  constructor(
    message: string,
    readonly param: string,
  ) {
    super(message);
    this.name = 'FormDecodeError';
  }
}

const FORBIDDEN_SEGMENTS = new Set(['__proto__', 'prototype', 'constructor']);
const INDEX_PATTERN = /^(0|[1-9]\d*)$/;

export function decodeStripeForm(encoded: string): FormObject {
  const root: FormObject = {};
  for (const [key, value] of new URLSearchParams(encoded)) {
    assign(root, parseKeyPath(key), value, key);
  }
  return arraysFromIndexedObjects(root) as FormObject;
}

/** `metadata[stack]` → ['metadata', 'stack']; `types[]` → ['types', '']. */
function parseKeyPath(key: string): string[] {
  const match = /^([^[\]]+)((?:\[[^[\]]*\])*)$/.exec(key);
  if (!match) {
    throw new FormDecodeError(`Invalid parameter name: ${key}`, key);
  }
  const head = match[1] as string;
  const brackets = match[2] ?? '';
  const segments = [head, ...Array.from(brackets.matchAll(/\[([^[\]]*)\]/g), (m) => m[1] as string)];
  for (const segment of segments) {
    if (FORBIDDEN_SEGMENTS.has(segment)) {
      throw new FormDecodeError(`Invalid parameter name: ${key}`, key);
    }
  }
  return segments;
}

/** Objects are built first (arrays as index-keyed objects), so `a[1]` before `a[0]` still works. */
function assign(root: FormObject, path: string[], value: string, key: string): void {
  let node: FormObject = root;
  for (let i = 0; i < path.length; i += 1) {
    let segment = path[i] as string;
    const isLeaf = i === path.length - 1;
    if (segment === '') {
      // `types[]`: append at the next free index.
      segment = String(Object.keys(node).length);
    }
    const existing = node[segment];
    if (isLeaf) {
      if (existing !== undefined) {
        throw new FormDecodeError(`Parameter ${key} was given more than once or conflicts with another`, key);
      }
      node[segment] = value;
      return;
    }
    if (existing === undefined) {
      const child: FormObject = {};
      node[segment] = child;
      node = child;
    } else if (typeof existing === 'string' || Array.isArray(existing)) {
      throw new FormDecodeError(`Parameter ${key} conflicts with another parameter`, key);
    } else {
      node = existing;
    }
  }
}

function arraysFromIndexedObjects(value: FormValue): FormValue {
  if (typeof value === 'string' || Array.isArray(value)) {
    return value;
  }
  const keys = Object.keys(value);
  const converted: FormObject = {};
  for (const key of keys) {
    converted[key] = arraysFromIndexedObjects(value[key] as FormValue);
  }
  if (keys.length > 0 && keys.every((key) => INDEX_PATTERN.test(key))) {
    return keys
      .map(Number)
      .sort((a, b) => a - b)
      .map((index) => converted[String(index)] as FormValue);
  }
  return converted;
}
