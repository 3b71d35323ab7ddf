import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseSecrets } from '../../service/webhook/secretStore';
import { postgresUid, secretWriterScript, serviceUid, type SecretFile, type SecretWriterOptions } from '../secretFiles';

// The script runs here exactly as in the writer container (as root, with sh); only the two
// directories are passed as arguments instead of the container paths.
const runningAsRoot = process.getuid?.() === 0;
const asRoot = runningAsRoot ? test : test.skip;

let dir: string;
let target: string;
let uploads: string;

beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'secret-files-'));
  target = path.join(dir, 'host-secrets');
  uploads = path.join(dir, 'uploads');
  mkdirSync(target);
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** Uploads the values the way the Docker provider does, then runs the writer script. */
function install(files: Array<Pick<SecretFile, 'reader' | 'name'> & { value: string }>, options: SecretWriterOptions = {}): string {
  for (const file of files) {
    mkdirSync(path.join(uploads, file.reader), { recursive: true });
    writeFileSync(path.join(uploads, file.reader, file.name), `${file.value}\n`, { mode: 0o400 });
  }
  const script = path.join(dir, 'install.sh');
  writeFileSync(script, secretWriterScript(files, options));
  return execFileSync('sh', [script, target, uploads], { encoding: 'utf8' });
}

const webhookSecret = { reader: 'service', name: 'stripe_webhook_secret' } as const;
const startupWriter = { keep: [webhookSecret], placeholder: webhookSecret };

asRoot('the first writer creates a random placeholder webhook secret only where none exists, and never removes the real one', () => {
  install([{ reader: 'service', name: 'stripe_api_key', value: 'sk_test_x' }], startupWriter);
  const placeholder = readFileSync(path.join(target, 'service', 'stripe_webhook_secret'), 'utf8');
  expect(placeholder).toMatch(/^whsec_[0-9a-f]{64}\n$/);
  expect(parseSecrets(placeholder, 'placeholder')).toHaveLength(1); // the service starts with it
  const file = statSync(path.join(target, 'service', 'stripe_webhook_secret'));
  expect({ mode: file.mode & 0o777, uid: file.uid }).toEqual({ mode: 0o400, uid: serviceUid });

  install([webhookSecret].map((name) => ({ ...name, value: 'whsec_fromTheEndpoint' })), { cleanUp: false });
  install([{ reader: 'service', name: 'stripe_api_key', value: 'sk_test_y' }], startupWriter);

  expect(readFileSync(path.join(target, 'service', 'stripe_webhook_secret'), 'utf8')).toBe('whsec_fromTheEndpoint\n');
  expect(readdirSync(path.join(target, 'service')).sort()).toEqual(['stripe_api_key', 'stripe_webhook_secret']);
});

asRoot('the webhook secret writer leaves the other files alone', () => {
  install([{ reader: 'service', name: 'stripe_api_key', value: 'sk_test_x' }], startupWriter);
  install([{ ...webhookSecret, value: 'whsec_one\nwhsec_two' }], { cleanUp: false });

  expect(readdirSync(path.join(target, 'service')).sort()).toEqual(['stripe_api_key', 'stripe_webhook_secret']);
  expect(readFileSync(path.join(target, 'service', 'stripe_webhook_secret'), 'utf8')).toBe('whsec_one\nwhsec_two\n');
});

asRoot('each file is 0400 and owned by its only reader, in a 0500 directory of that reader', () => {
  install([
    { reader: 'service', name: 'stripe_webhook_secret', value: 'whsec_first' },
    { reader: 'postgres', name: 'postgres_password', value: 'pg-password' },
  ]);

  const secretFile = statSync(path.join(target, 'service', 'stripe_webhook_secret'));
  expect({ mode: secretFile.mode & 0o777, uid: secretFile.uid }).toEqual({ mode: 0o400, uid: serviceUid });
  const serviceDir = statSync(path.join(target, 'service'));
  expect({ mode: serviceDir.mode & 0o777, uid: serviceDir.uid }).toEqual({ mode: 0o500, uid: serviceUid });
  const passwordFile = statSync(path.join(target, 'postgres', 'postgres_password'));
  expect({ mode: passwordFile.mode & 0o777, uid: passwordFile.uid }).toEqual({ mode: 0o400, uid: postgresUid });
  expect(statSync(target).mode & 0o777).toBe(0o700);
  expect(readFileSync(path.join(target, 'service', 'stripe_webhook_secret'), 'utf8')).toBe('whsec_first\n');
});

asRoot('a new secret replaces the file by rename in the same directory, which a directory mount sees', () => {
  install([{ reader: 'service', name: 'stripe_webhook_secret', value: 'whsec_first' }]);
  const directoryBefore = statSync(path.join(target, 'service')).ino;
  const fileBefore = statSync(path.join(target, 'service', 'stripe_webhook_secret')).ino;

  install([{ reader: 'service', name: 'stripe_webhook_secret', value: 'whsec_second' }]);

  expect(statSync(path.join(target, 'service')).ino).toBe(directoryBefore);
  expect(statSync(path.join(target, 'service', 'stripe_webhook_secret')).ino).not.toBe(fileBefore);
  expect(readFileSync(path.join(target, 'service', 'stripe_webhook_secret'), 'utf8')).toBe('whsec_second\n');
  expect(readdirSync(path.join(target, 'service'))).toEqual(['stripe_webhook_secret']); // no temp file left
});

asRoot('uploaded copies are removed, a file no longer configured is deleted, and only names are printed', () => {
  install([
    { reader: 'service', name: 'stripe_webhook_secret', value: 'whsec_first' },
    { reader: 'service', name: 'auth_jwt_secret', value: 'jwt-secret' },
  ]);

  const printed = install([{ reader: 'service', name: 'stripe_webhook_secret', value: 'whsec_first' }]);

  expect(readdirSync(path.join(target, 'service'))).toEqual(['stripe_webhook_secret']);
  expect(readdirSync(path.join(uploads, 'service'))).toEqual([]);
  expect(printed).toBe('installed service/stripe_webhook_secret\n');
});

test('a file name that is not plain letters and underscores is refused', () => {
  expect(() => secretWriterScript([{ reader: 'service', name: '../escape' }])).toThrow(/lower case letters/);
});
