import { execFileSync } from 'node:child_process';
import path from 'node:path';

export interface SelfSignedCertificate {
  certificatePath: string;
  keyPath: string;
}

/** A throw-away certificate for `domain` made with the openssl CLI (installed with nginx by .ci/run). */
export function makeSelfSignedCertificate(dir: string, domain: string): SelfSignedCertificate {
  const certificatePath = path.join(dir, 'tls.crt');
  const keyPath = path.join(dir, 'tls.key');
  execFileSync(
    'openssl',
    [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
      '-subj', `/CN=${domain}`, '-addext', `subjectAltName=DNS:${domain}`,
      '-keyout', keyPath, '-out', certificatePath,
    ],
    { stdio: 'ignore' },
  );
  return { certificatePath, keyPath };
}
