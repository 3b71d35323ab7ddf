import * as pulumi from '@pulumi/pulumi';
import type * as docker from '@pulumi/docker';

/**
 * Secret files on the Docker host. A one-shot container (the service image, as root, no network)
 * receives the values as uploaded files (never env or argv) and installs them into the host secrets
 * directory: one subdirectory per reader, each file 0400 and owned by the only account that reads it.
 * The service mounts its subdirectory read-only as a directory, so a rewritten file (new webhook
 * secret) reaches running replicas, which hot-reload it, without replacing them.
 */

/** The `node` account of the official Node image, which the Dockerfile runs the service as. */
export const serviceUid = 1000;
/** The `postgres` account of the official PostgreSQL image, which reads POSTGRES_PASSWORD_FILE. */
export const postgresUid = 999;

export const secretOwners = { service: serviceUid, postgres: postgresUid } as const;
export type SecretReader = keyof typeof secretOwners;

/** Where each reader sees its subdirectory. */
export const secretMountPaths: Record<SecretReader, string> = {
  service: '/run/secrets/stripe-credits',
  postgres: '/run/secrets/postgres',
};

export interface SecretFile {
  reader: SecretReader;
  /** File name: lower case letters and underscores. */
  name: string;
  value: pulumi.Input<string>;
}

/** Inside the writer container: uploads land here, the host directory is mounted at `target`. */
export const writerPaths = { uploads: '/run/secret-files', target: '/target', script: '/run/secret-files/install.sh' };

export type SecretFileName = Pick<SecretFile, 'reader' | 'name'>;

export interface SecretWriterOptions {
  /**
   * Delete every other file of the readers' directories (files no longer configured, leftovers of a
   * failed run), except the ones in `keep`. Default true.
   */
  cleanUp?: boolean;
  /** Files another writer installs: never deleted here. */
  keep?: SecretFileName[];
  /**
   * A webhook signing secret file to create, with a random secret nobody has, when it does not exist
   * yet: the service needs one to start, and the endpoint (whose secret replaces it) is created only
   * once the service answers.
   */
  placeholder?: SecretFileName;
}

/**
 * The writer's script. Each file is written beside its final name and renamed over it, so a reader
 * sees the old content or the new, never half a file; the uploaded copy is then removed from the
 * container. It prints only file names. Arguments: host directory mount, uploads directory (defaults:
 * the container paths).
 */
export function secretWriterScript(files: SecretFileName[], options: SecretWriterOptions = {}): string {
  const { cleanUp = true, keep = [], placeholder } = options;
  for (const file of [...files, ...keep, ...(placeholder ? [placeholder] : [])]) {
    if (!/^[a-z][a-z_]*$/.test(file.name)) throw new Error(`Secret file name "${file.name}" must be lower case letters and underscores.`);
  }
  const readers = Object.keys(secretOwners) as SecretReader[];
  const lines = [
    '#!/bin/sh',
    '# Installs the uploaded secret files into the host secrets directory (see infra/secretFiles.ts).',
    'set -eu',
    'umask 077',
    `target="\${1:-${writerPaths.target}}"`,
    `uploads="\${2:-${writerPaths.uploads}}"`,
    '',
    '# install_file READER OWNER NAME',
    'install_file() {',
    '  cp "$uploads/$1/$3" "$target/$1/.$3.new"',
    '  chown "$2:$2" "$target/$1/.$3.new"',
    '  chmod 0400 "$target/$1/.$3.new"',
    '  mv -f "$target/$1/.$3.new" "$target/$1/$3"',
    '  rm -f "$uploads/$1/$3"',
    '  echo "installed $1/$3"',
    '}',
    '',
    '# install_placeholder READER OWNER NAME: a random whsec_ secret, only where no file exists yet',
    'install_placeholder() {',
    '  [ -s "$target/$1/$3" ] && return 0',
    `  printf 'whsec_%s\\n' "$(od -An -N32 -tx1 /dev/urandom | tr -d ' \\n')" > "$target/$1/.$3.new"`,
    '  chown "$2:$2" "$target/$1/.$3.new"',
    '  chmod 0400 "$target/$1/.$3.new"',
    '  mv -f "$target/$1/.$3.new" "$target/$1/$3"',
    '  echo "installed $1/$3 (a placeholder until the Stripe endpoint exists)"',
    '}',
    '',
    'chmod 0700 "$target"',
  ];
  for (const reader of readers) {
    const owner = secretOwners[reader];
    const namesOf = (list: SecretFileName[]) => list.filter((file) => file.reader === reader).map((file) => file.name);
    const names = namesOf(files);
    const kept = [...new Set([...names, ...namesOf(keep), ...namesOf(placeholder ? [placeholder] : [])])];
    lines.push(
      '',
      `mkdir -p "$target/${reader}"`,
      `chown ${owner}:${owner} "$target/${reader}"`,
      `chmod 0500 "$target/${reader}"`,
      ...names.map((name) => `install_file ${reader} ${owner} ${name}`),
      ...(placeholder?.reader === reader ? [`install_placeholder ${reader} ${owner} ${placeholder.name}`] : []),
      ...(cleanUp ? [`find "$target/${reader}" -mindepth 1 -maxdepth 1 ${kept.map((name) => `! -name ${name} `).join('')}-exec rm -rf {} +`] : []),
    );
  }
  return `${lines.join('\n')}\n`;
}

/** The writer container's uploads: the script, then each file as a secret (a trailing newline, like `echo`). */
export function secretWriterUploads(files: SecretFile[], options: SecretWriterOptions = {}): docker.types.input.ContainerUpload[] {
  return [
    { file: writerPaths.script, content: secretWriterScript(files, options), permissions: '0500' },
    ...files.map((file) => ({
      file: `${writerPaths.uploads}/${file.reader}/${file.name}`,
      content: pulumi.secret(pulumi.output(file.value).apply((value) => `${value}\n`)),
      permissions: '0400',
    })),
  ];
}
