import dgram from 'node:dgram';

/**
 * A DNS server on loopback that answers A queries for one name with several addresses, the way
 * Docker's embedded DNS answers for a network alias shared by all replicas. Anything else gets NXDOMAIN.
 */
export interface DnsServer {
  /** `127.0.0.1:port`, the form nginx's `resolver` takes. */
  address: string;
  /** Answers with these addresses from now on, as Docker's DNS does when containers join or leave the network. */
  setAddresses(addresses: string[]): void;
  close(): Promise<void>;
}

const ttlSeconds = 1;

export async function startDnsServer(name: string, initialAddresses: string[]): Promise<DnsServer> {
  let addresses = [...initialAddresses];
  const socket = dgram.createSocket('udp4');
  socket.on('message', (query, peer) => {
    const answer = respond(query, name.toLowerCase(), addresses);
    if (answer) socket.send(answer, peer.port, peer.address);
  });
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  return {
    address: `127.0.0.1:${socket.address().port}`,
    setAddresses(next) {
      addresses = [...next];
    },
    close: () => new Promise<void>((resolve) => socket.close(() => resolve())),
  };
}

/** Builds the response to one query (RFC 1035 §4): header, the question echoed, then A records. */
function respond(query: Buffer, name: string, addresses: string[]): Buffer | undefined {
  if (query.length < 12) return undefined;
  const labels: string[] = [];
  let offset = 12;
  while (offset < query.length && query[offset] !== 0) {
    const length = query[offset] ?? 0;
    labels.push(query.toString('ascii', offset + 1, offset + 1 + length));
    offset += length + 1;
  }
  const questionEnd = offset + 5; // zero byte, QTYPE, QCLASS
  if (questionEnd > query.length) return undefined;
  const type = query.readUInt16BE(offset + 1);
  const known = labels.join('.').toLowerCase() === name;
  const records = known && type === 1 ? addresses : [];

  const header = Buffer.alloc(12);
  query.copy(header, 0, 0, 2); // id
  header.writeUInt16BE(known ? 0x8180 : 0x8183, 2); // response, recursion available, NOERROR or NXDOMAIN
  header.writeUInt16BE(1, 4);
  header.writeUInt16BE(records.length, 6);
  const answers = records.map((ip) => {
    const record = Buffer.alloc(16);
    record.writeUInt16BE(0xc00c, 0); // pointer to the name in the question
    record.writeUInt16BE(1, 2); // A
    record.writeUInt16BE(1, 4); // IN
    record.writeUInt32BE(ttlSeconds, 6);
    record.writeUInt16BE(4, 10);
    ip.split('.').forEach((octet, index) => record.writeUInt8(Number(octet), 12 + index));
    return record;
  });
  return Buffer.concat([header, query.subarray(12, questionEnd), ...answers]);
}
