/** Prints a development session token for the user routes: see `usage`. */
import { ConfigError, loadConfig } from '../service/config';
import { sessionKey } from '../service/devSecret';
import { canSign, signSessionToken } from '../service/users/sessionTokens';
import { parseCommandLine, parseDurationSeconds } from './lib/cli';

const usage = `
Usage: npm run make-token -- --user ID [--ttl 1h]

Prints a session token for a development service: an HS256 JWT whose \`sub\` is the user id, the way the
product's sign-in would issue it. Use it for the balance and its live stream:

  curl -H "Authorization: Bearer $(npm run -s make-token -- --user alice)" http://127.0.0.1:3000/api/v1/billing/credits

Signed with AUTH_JWT_SECRET or AUTH_JWT_SECRET_FILE when set (give it the service's), else with the
development key \`npm start\` keeps in .data/auth-jwt-secret (made now if it is not there yet); with the
issuer and audience of AUTH_JWT_ISSUER and AUTH_JWT_AUDIENCE when set. Paste it into the credits page
(http://127.0.0.1:3000/billing/) to sign in there.
Refuses to run when NODE_ENV=production: there, sessions come from the product's sign-in only.

Options:
  --user ID    the user id (\`sub\`; the id Checkout gets as client_reference_id); required
  --ttl TIME   how long the token is valid: 90s, 30m, 1h, 7d … (default 1h)
  -h, --help   show this text
`;

const maxTtlSeconds = 30 * 86400;

async function main(): Promise<void> {
  const cli = parseCommandLine({ usage, options: { user: { type: 'string' }, ttl: { type: 'string', default: '1h' } } });
  const userId = cli.values.user?.trim();
  if (!userId) cli.fail('--user is required (the id the token signs in as)');
  const ttlSeconds = parseDurationSeconds(cli.values.ttl);
  if (ttlSeconds === undefined || ttlSeconds < 1 || ttlSeconds > maxTtlSeconds) cli.fail(`--ttl must be a duration from 1s to 30d such as 30m or 1h, got "${cli.values.ttl}"`);

  // Before reading the configuration: in production that would fail first, on settings this script does not use.
  if (process.env.NODE_ENV === 'production') {
    console.error('make-token is for development only and refuses to run with NODE_ENV=production: there, session tokens come from the product’s sign-in.');
    process.exit(1);
  }
  const key = (await sessionKey(loadConfig(process.env)))!; // Outside production there always is one.
  if (!canSign(key.tokens)) {
    console.error('make-token cannot sign for a service that checks tokens against AUTH_JWKS_URL: only the product’s sign-in holds that private key. Unset AUTH_JWKS_URL to use a shared key.');
    process.exit(1);
  }
  const issuedAtSeconds = Math.floor(Date.now() / 1000);
  const token = await signSessionToken(key.tokens, userId!, ttlSeconds!, issuedAtSeconds);
  console.log(token);
  // For a person reading the token; inside $(…) the note would only clutter the terminal.
  if (process.stdout.isTTY) console.error(`session token for ${userId}, valid until ${new Date((issuedAtSeconds + ttlSeconds!) * 1000).toISOString()}, signed with ${key.devKey?.path ?? 'AUTH_JWT_SECRET'}`);
}

main().catch((error: unknown) => {
  console.error(error instanceof ConfigError ? `Configuration error: ${error.message}` : `make-token failed: ${(error as Error).message}`);
  process.exit(1);
});
