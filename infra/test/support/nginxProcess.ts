import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, readFileSync, watch, writeFileSync } from 'node:fs';
import path from 'node:path';

/** Debian's nginx binary (package nginx-light). */
export const nginxBinary = '/usr/sbin/nginx';

export interface NginxProcess {
  /** Stops nginx (fast shutdown, open streams included) and waits for it to exit. */
  stop(): Promise<void>;
}

function requireNginx(): void {
  if (!existsSync(nginxBinary)) throw new Error(`No nginx at ${nginxBinary}: install Debian's nginx-light (apt-get install nginx-light), as .ci/run does.`);
}

/** `nginx -t` on a config file; returns nginx's report, throws with it when the config is rejected. */
export function testNginxConfig(prefixDir: string, configPath: string): string {
  requireNginx();
  const result = spawnSync(nginxBinary, ['-t', '-p', prefixDir, '-c', configPath], { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`nginx -t rejected ${configPath}:\n${result.stderr || String(result.error)}`);
  return result.stderr;
}

/** `nginx -v`: e.g. `nginx version: nginx/1.22.1`. */
export function nginxVersion(): string {
  requireNginx();
  const result = spawnSync(nginxBinary, ['-v'], { encoding: 'utf8' });
  return `${result.stderr}${result.stdout}`.trim();
}

/**
 * Runs nginx in the foreground as a child of the test, with everything (config, pid, temp files, logs)
 * under `prefixDir`. Resolves once the pid file exists: nginx writes it after binding its sockets.
 */
export async function startNginx(prefixDir: string, config: string): Promise<NginxProcess> {
  requireNginx();
  const configPath = path.join(prefixDir, 'nginx.conf');
  const pidPath = path.join(prefixDir, 'nginx.pid');
  writeFileSync(configPath, config);
  // Workers run as an unprivileged account when the test runs as root: they write request bodies
  // into temp directories below the prefix, so it must be traversable (it holds no secret file
  // readable by them: the TLS key is 0600 and read by the master).
  chmodSync(prefixDir, 0o755);

  const child = spawn(nginxBinary, ['-p', prefixDir, '-c', configPath, '-g', 'daemon off;'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));

  const watcher = watch(prefixDir);
  try {
    await new Promise<void>((resolve, reject) => {
      watcher.on('change', () => existsSync(pidPath) && resolve());
      child.once('exit', (code) => reject(new Error(`nginx exited with ${code} before it was ready:\n${stderr}`)));
      if (existsSync(pidPath)) resolve();
    });
  } finally {
    watcher.close();
  }

  return {
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

/** The error log's content, for failure messages. */
export function readLog(logPath: string): string {
  return existsSync(logPath) ? readFileSync(logPath, 'utf8') : '';
}
