import http from 'node:http';
import https from 'node:https';

export interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

export interface Edge {
  host: string;
  port: number;
  /** The name the certificate is for; sent as SNI and Host. */
  domain: string;
  ca: Buffer;
}

export interface RequestOptions {
  method?: string;
  path: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
  /** Source address on loopback: nginx's rate limit counts per client address. */
  localAddress?: string;
  agent?: https.Agent;
}

/** One HTTPS request to nginx, verifying its certificate for `domain`. */
export function request(edge: Edge, options: RequestOptions): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: edge.host,
        port: edge.port,
        servername: edge.domain,
        ca: edge.ca,
        method: options.method ?? 'GET',
        path: options.path,
        headers: { host: edge.domain, ...options.headers },
        localAddress: options.localAddress,
        agent: options.agent,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(options.body);
  });
}

/** Runs `count` calls of `task`, at most `concurrency` at a time; resolves with the results in order. */
export async function inParallel<T>(count: number, concurrency: number, task: (index: number) => Promise<T>): Promise<T[]> {
  const results: T[] = new Array(count);
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const index = next++;
      results[index] = await task(index);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  return results;
}

export interface EventStream {
  /** Resolves with the first `data:` payload (after `since`) for which `accept` returns true. */
  next(accept: (data: string) => boolean): Promise<string>;
  /** True while the response is still open. */
  open(): boolean;
  close(): void;
}

/** Opens a Server-Sent Events stream through nginx and hands out its events as they arrive. */
export function openEventStream(edge: Edge, path: string, headers: Record<string, string> = {}): Promise<EventStream> {
  return new Promise((resolve, reject) => {
    const req = https.request({
      host: edge.host,
      port: edge.port,
      servername: edge.domain,
      ca: edge.ca,
      path,
      headers: { host: edge.domain, accept: 'text/event-stream', ...headers },
      agent: false,
    });
    req.on('error', reject);
    req.on('response', (res) => {
      if (res.statusCode !== 200) {
        reject(new Error(`event stream answered ${res.statusCode}`));
        res.resume();
        return;
      }
      let buffered = '';
      const events: string[] = [];
      const waiters: Array<{ accept: (data: string) => boolean; resolve: (data: string) => void }> = [];
      let ended = false;
      const deliver = () => {
        for (const waiter of [...waiters]) {
          const found = events.find(waiter.accept);
          if (found !== undefined) {
            waiters.splice(waiters.indexOf(waiter), 1);
            waiter.resolve(found);
          }
        }
      };
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buffered += chunk;
        let boundary = buffered.indexOf('\n\n');
        while (boundary !== -1) {
          const block = buffered.slice(0, boundary);
          buffered = buffered.slice(boundary + 2);
          const data = block.split('\n').filter((line) => line.startsWith('data:')).map((line) => line.slice(5).trim()).join('\n');
          if (data) events.push(data);
          boundary = buffered.indexOf('\n\n');
        }
        deliver();
      });
      res.on('close', () => (ended = true));
      resolve({
        next: (accept) =>
          new Promise((resolveEvent) => {
            waiters.push({ accept, resolve: resolveEvent });
            deliver();
          }),
        open: () => !ended,
        close: () => req.destroy(),
      });
    });
    req.end();
  });
}
