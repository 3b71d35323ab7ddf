import net from 'node:net';

/** A TCP port free on every given loopback address at the time of asking (another process may take it later). */
export async function freePort(hosts: string[] = ['127.0.0.1']): Promise<number> {
  const attempts = 20;
  for (let attempt = 0; attempt < attempts; attempt++) {
    const port = await new Promise<number>((resolve, reject) => {
      const probe = net.createServer();
      probe.once('error', reject);
      probe.listen(0, hosts[0], () => {
        const { port: chosen } = probe.address() as net.AddressInfo;
        probe.close(() => resolve(chosen));
      });
    });
    const freeEverywhere = await Promise.all(hosts.slice(1).map((host) => portIsFree(host, port)));
    if (freeEverywhere.every(Boolean)) return port;
  }
  throw new Error(`No port free on all of ${hosts.join(', ')} after ${attempts} attempts.`);
}

function portIsFree(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.createServer();
    probe.once('error', () => resolve(false));
    probe.listen(port, host, () => probe.close(() => resolve(true)));
  });
}
