/**
 * Other spellings of a path that some component might treat as the same path: a trailing slash, another
 * case, doubled slashes, percent-encoded letters and slashes, dot segments. Sent as raw request targets
 * (a URL parser would normalise several of them away before they leave the client).
 */
export function otherSpellings(path: string): string[] {
  const segments = path.split('/').filter(Boolean);
  const last = segments.at(-1) as string;
  const parent = `/${segments.slice(0, -1).join('/')}`;
  const encodedFirstLetter = `%${last.charCodeAt(0).toString(16)}${last.slice(1)}`;
  return [
    `${path}/`,
    `${parent}/${last.toUpperCase()}`,
    `${parent}/${last[0]?.toUpperCase()}${last.slice(1)}`,
    path.toUpperCase(),
    `/${path}`,
    `${parent}//${last}`,
    `${parent}/${encodedFirstLetter}`,
    `${parent}%2F${last}`,
    `${path}%2F`,
    `${parent}/./${last}`,
    `${parent}/x/../${last}`,
    `${path}/.`,
    `${path};x`,
  ];
}
