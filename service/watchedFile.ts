import { watch, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from './logger';

/** A value read from a file and kept current while the process runs (secrets rotated without a restart). */
export interface WatchedFile<T> {
  current(): T;
  close(): void;
}

export class WatchedFileError extends Error {
  override name = 'WatchedFileError';
}

export interface WatchedFileOptions<T> {
  logger: Logger;
  /** What the file is, in messages: e.g. `STRIPE_API_KEY_FILE (/run/secrets/stripe_api_key)`. */
  source: string;
  /** What it holds, in log lines: e.g. `webhook signing secrets`. */
  what: string;
  /** The value in the file; throws (naming the line, never its content) when the file is not valid. */
  parse: (content: string, source: string) => T;
  /** Log fields that tell two values apart without revealing them (fingerprints); also decides "changed". */
  describe: (value: T) => Record<string, unknown>;
  onReload?: (value: T) => void;
  /** Re-read on this timer too: directory events can be missed (network filesystems, some bind mounts). */
  pollIntervalMillis?: number;
}

const defaultPollIntervalMillis = 2_000;
const reloadDebounceMillis = 25;

/**
 * Reads the file once (a failure throws: the caller cannot start without it), then keeps the value current.
 * The directory is watched, not the file, because an atomic rename or a Kubernetes/Docker `..data` symlink
 * swap replaces the file's inode. A reload that fails keeps the previous value and logs why.
 */
export async function watchFile<T>(filePath: string, options: WatchedFileOptions<T>): Promise<WatchedFile<T>> {
  const { logger, source, what } = options;
  let lastContent = await readWatchedFile(filePath, source);
  let value = options.parse(lastContent, source);
  let debounceTimer: NodeJS.Timeout | undefined;
  let reloading: Promise<void> | undefined;

  const reload = async () => {
    let content: string;
    try {
      content = await readWatchedFile(filePath, source);
    } catch (error) {
      logger.error({ reason: (error as Error).message }, `${what}: file unreadable; keeping the previous value`);
      return;
    }
    if (content === lastContent) return;
    lastContent = content;
    try {
      const next = options.parse(content, source);
      const changed = JSON.stringify(options.describe(next)) !== JSON.stringify(options.describe(value));
      value = next;
      if (changed) {
        logger.info(options.describe(next), `${what} reloaded`);
        options.onReload?.(next);
      }
    } catch (error) {
      logger.error({ reason: (error as Error).message }, `${what}: file invalid; keeping the previous value`);
    }
  };

  const scheduleReload = () => {
    if (debounceTimer) return;
    debounceTimer = setTimeout(() => {
      debounceTimer = undefined;
      reloading = (reloading ?? Promise.resolve()).then(reload);
    }, reloadDebounceMillis);
  };

  let watcher: FSWatcher | undefined;
  const cannotWatch = (error: Error) => logger.warn({ reason: error.message }, `${what}: cannot watch the file's directory; relying on the timer`);
  try {
    watcher = watch(path.dirname(filePath), { persistent: false }, scheduleReload);
    watcher.on('error', cannotWatch);
  } catch (error) {
    cannotWatch(error as Error);
  }
  const poller = setInterval(scheduleReload, options.pollIntervalMillis ?? defaultPollIntervalMillis);
  poller.unref();

  return {
    current: () => value,
    close() {
      watcher?.close();
      clearInterval(poller);
      if (debounceTimer) clearTimeout(debounceTimer);
    },
  };
}

async function readWatchedFile(filePath: string, source: string): Promise<string> {
  try {
    return await readFile(filePath, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'unknown error';
    throw new WatchedFileError(`${source} cannot be read (${code}). Create the file or fix the path.`);
  }
}
