/**
 * Usage: npx tsx infra/localStripe.ts [port]     (default port 12111)
 *
 * A Stripe stand-in for a `local` stack (README.md, Deploy, "Run it all locally without Stripe"): the
 * repository's Stripe fake, reachable at http://127.0.0.1:<port> until Ctrl-C. Point the stack at it
 * (`pulumi config set stripeApiBase http://127.0.0.1:12111`); any sk_test_… key is accepted. It keeps
 * endpoints in memory only: after a restart, `pulumi up --refresh` creates the endpoint again.
 */
import net from 'node:net';
import { startLocalStripe } from '../localStripe';

const defaultPort = 12111;

async function main(): Promise<void> {
  const port = Number(process.argv[2] ?? defaultPort);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`usage: npx tsx infra/localStripe.ts [port]; got "${process.argv[2]}"`);
  const fake = await startLocalStripe();
  const target = new URL(fake.baseUrl);
  // The fake picks a random port; a fixed one keeps the stack's stripeApiBase valid across restarts.
  const front = net.createServer((client) => {
    const upstream = net.connect(Number(target.port), target.hostname);
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve, reject) => front.once('error', reject).listen(port, '127.0.0.1', resolve));
  console.error(`Local Stripe API at http://127.0.0.1:${port}  (pulumi config set stripeApiBase http://127.0.0.1:${port})`);
  console.error('Ctrl-C stops it.');
  const stop = () => {
    for (const endpoint of fake.webhookEndpoints()) console.error(`endpoint at exit: ${endpoint.id} ${endpoint.url}`);
    front.close();
    void fake.close().then(() => process.exit(0));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

main().catch((error: unknown) => {
  console.error((error as Error).message);
  process.exit(1);
});
