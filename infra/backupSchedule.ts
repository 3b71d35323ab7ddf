/**
 * Scheduled backups of the stack's own PostgreSQL: a long-running container of the PostgreSQL image
 * (its pg_dump is the server's version) that dumps the database into a host directory at an interval
 * and deletes dumps older than the retention. scripts/restore-database restores one.
 */

/** Inside the backup container. */
export const backupPaths = { script: '/run/backup/backup.sh', target: '/backups' };

/** File name of a dump: `stripe_credits-20250101T020000Z.dump`, sortable by time. */
export const dumpNamePattern = /^stripe_credits-\d{8}T\d{6}Z\.dump$/;

/**
 * The backup loop, POSIX sh (the image's /bin/sh). Connection settings come from the standard libpq
 * variables (PGHOST, PGPORT, PGUSER, PGDATABASE); the password from BACKUP_PASSWORD_FILE, read again
 * for every dump (it may be rotated) into a private pgpass file, never into an argument or variable
 * of another process. A dump is written under a hidden name and renamed when complete, so the
 * directory holds whole dumps only. Argument: the target directory; `--once` dumps once and exits.
 */
export function backupScript(): string {
  return `#!/bin/sh
# Scheduled pg_dump of the stack's database (see infra/backupSchedule.ts). Usage: backup.sh DIR [--once]
set -eu
dir="\${1:-${backupPaths.target}}"
interval_seconds="\${BACKUP_INTERVAL_SECONDS:?set BACKUP_INTERVAL_SECONDS}"
retention_days="\${BACKUP_RETENTION_DAYS:?set BACKUP_RETENTION_DAYS}"
password_file="\${BACKUP_PASSWORD_FILE:?set BACKUP_PASSWORD_FILE}"
umask 077

backup_once() {
  passfile="$(mktemp)"
  # pgpass format: host:port:database:user:password, with \\ and : escaped in the password.
  printf '*:*:*:*:%s\\n' "$(sed -e 's/[\\\\:]/\\\\&/g' "$password_file" | head -n 1)" > "$passfile"
  name="stripe_credits-$(date -u +%Y%m%dT%H%M%SZ).dump"
  status=0
  PGPASSFILE="$passfile" pg_dump --format=custom --no-password --file="$dir/.$name.partial" || status=$?
  rm -f "$passfile"
  if [ "$status" -ne 0 ]; then
    rm -f "$dir/.$name.partial"
    echo "backup failed (pg_dump exit $status): the next attempt is in $interval_seconds s" >&2
    return 1
  fi
  mv "$dir/.$name.partial" "$dir/$name"
  echo "backup $name: $(wc -c < "$dir/$name") bytes"
  # Retention: whole dumps older than the retention, and partial ones a failed run left.
  find "$dir" -maxdepth 1 -type f -name 'stripe_credits-*.dump' -mmin +$((retention_days * 1440)) -print -delete | sed 's|.*/|deleted |'
  find "$dir" -maxdepth 1 -type f -name '.stripe_credits-*.dump.partial' -mmin +60 -delete
}

if [ "\${2:-}" = "--once" ]; then
  backup_once
  exit
fi
# docker stop sends SIGTERM to this script (PID 1): leave at once, between two dumps or during a sleep.
trap 'exit 0' TERM INT
while :; do
  backup_once || true
  sleep "$interval_seconds" &
  wait $!
done
`;
}
