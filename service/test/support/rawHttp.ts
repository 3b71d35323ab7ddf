/**
 * HTTP/1.1 over a bare socket, for inputs a well-behaved client refuses to send: non-ASCII or huge header
 * values, repeated headers, lying Content-Length, raw garbage. Resolves with the status (0 when the server
 * closed without answering) once the server answers or closes, or after the deadline.
 */
import net from 'node:net';

export interface RawResponse {
  status: number;
  head: string;
  body: string;
}

const defaultDeadlineMillis = 10_000;

export function rawExchange(port: number, request: Buffer | string, deadlineMillis = defaultDeadlineMillis): Promise<RawResponse> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let settled = false;
    const finish = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      const text = Buffer.concat(chunks).toString('latin1');
      const [head = '', body = ''] = text.split('\r\n\r\n', 2);
      const match = /^HTTP\/1\.[01] (\d{3})/.exec(head);
      resolve({ status: match ? Number(match[1]) : 0, head, body });
    };
    const timer = setTimeout(finish, deadlineMillis);
    socket.on('data', (chunk) => {
      chunks.push(chunk);
      // One response is all we want: stop once its declared body has arrived.
      const text = Buffer.concat(chunks).toString('latin1');
      const end = text.indexOf('\r\n\r\n');
      const length = /\r\ncontent-length: *(\d+)/i.exec(text.slice(0, end));
      if (end >= 0 && length && Buffer.byteLength(text.slice(end + 4), 'latin1') >= Number(length[1])) finish();
    });
    socket.on('error', finish);
    socket.on('close', finish);
    socket.write(request, () => undefined);
  });
}

/**
 * A POST with the given header lines (each "Name: value", any bytes) and body; Content-Length is added
 * unless `omitLength`. With `sendBodyBytes`, only that much of the body is sent before waiting for the
 * answer, as a client does whose upload is refused early; the server can then close without a reset.
 */
export function rawPost(
  port: number,
  path: string,
  headerLines: ReadonlyArray<string | Buffer>,
  body: Buffer | string,
  options: { omitLength?: boolean; deadlineMillis?: number; sendBodyBytes?: number } = {},
): Promise<RawResponse> {
  const bodyBuffer = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
  const lines: Buffer[] = [Buffer.from(`POST ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n`)];
  for (const line of headerLines) lines.push(typeof line === 'string' ? Buffer.from(line, 'utf8') : line, Buffer.from('\r\n'));
  if (!options.omitLength) lines.push(Buffer.from(`Content-Length: ${bodyBuffer.length}\r\n`));
  lines.push(Buffer.from('\r\n'), options.sendBodyBytes === undefined ? bodyBuffer : bodyBuffer.subarray(0, options.sendBodyBytes));
  return rawExchange(port, Buffer.concat(lines), options.deadlineMillis);
}
