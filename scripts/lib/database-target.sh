# Sourced by scripts/backup-database and scripts/restore-database: where a stack's database is, and how
# to run a PostgreSQL client program (pg_dump, pg_restore, psql) against it with no password on any
# command line.
#   - the stack's own PostgreSQL container: through the Docker host (`docker exec`, which DOCKER_HOST or
#     --docker-host can point at a remote host), as the server's own user over its socket;
#   - an external PostgreSQL (databaseUrl): its postgres:// URL read from a file or stdin, the password
#     moved into a private pgpass file for the duration of the script.

TARGET_KIND=''         # container | url
TARGET_CONTAINER=''
TARGET_DATABASE='stripe_credits'
TARGET_USER='stripe_credits'
TARGET_URL=''          # the URL without its password
TARGET_PASSFILE=''

target_usage() {
  cat <<'USAGE'
Database (one of):
  --stack NAME              the stack's own PostgreSQL container, stripe-credits-NAME-postgres
  --container NAME          a PostgreSQL container by name
  --docker-host URL         the Docker host of the container (default: DOCKER_HOST, else the local socket),
                            e.g. ssh://deploy@docker.example.com
  --database NAME           database in the container (default stripe_credits)
  --user NAME               role in the container (default stripe_credits)
  --database-url-file FILE  an external PostgreSQL: FILE holds its postgres:// URL ('-' reads it from stdin)
USAGE
}

target_die() { echo "$SCRIPT_NAME: $*" >&2; exit 1; }

# target_option OPTION VALUE: consumes one database option; returns 1 when OPTION is not one.
target_option() {
  case $1 in
    --stack) TARGET_KIND=container; TARGET_CONTAINER="stripe-credits-$2-postgres" ;;
    --container) TARGET_KIND=container; TARGET_CONTAINER=$2 ;;
    --docker-host) export DOCKER_HOST=$2 ;;
    --database) TARGET_DATABASE=$2 ;;
    --user) TARGET_USER=$2 ;;
    --database-url-file) TARGET_KIND=url; target_read_url "$2" ;;
    *) return 1 ;;
  esac
}

# target_read_url FILE: takes a postgres:// URL apart; its password goes to a pgpass file only.
target_read_url() {
  local url
  if [[ $1 == - ]]; then IFS= read -r url || true; else [[ -r $1 ]] || target_die "cannot read $1"; IFS= read -r url < "$1" || true; fi
  url=$(printf '%s' "$url" | tr -d '[:space:]')
  [[ $url =~ ^postgres(ql)?://[^/]+/[^/?]+ ]] || target_die 'the database URL must look like postgres://user:password@host:5432/database'
  local rest=${url#*://} authority userinfo='' hostport user password=''
  authority=${rest%%/*}
  hostport=$authority
  if [[ $authority == *@* ]]; then userinfo=${authority%@*}; hostport=${authority##*@}; fi
  user=${userinfo%%:*}
  [[ $userinfo == *:* ]] && password=${userinfo#*:}
  TARGET_URL="postgresql://${user:+$user@}${hostport}${rest#"$authority"}"
  TARGET_PASSFILE=$(mktemp)
  trap 'rm -f -- "$TARGET_PASSFILE"' EXIT
  chmod 0600 -- "$TARGET_PASSFILE"
  # pgpass format: host:port:database:user:password, with \ and : escaped in the password.
  printf '%b' "${password//%/\\x}" | sed -e 's/[\\:]/\\&/g' -e 's/^/*:*:*:*:/' > "$TARGET_PASSFILE"
  echo >> "$TARGET_PASSFILE"
}

target_require() {
  [[ -n $TARGET_KIND ]] || target_die "say which database: --stack NAME, --container NAME or --database-url-file FILE (see --help)"
}

# Where, for messages: never the password.
target_describe() {
  if [[ $TARGET_KIND == container ]]; then
    echo "database $TARGET_DATABASE in container $TARGET_CONTAINER${DOCKER_HOST:+ on $DOCKER_HOST}"
  else
    echo "$TARGET_URL"
  fi
}

# target_run PROGRAM ARGS...: runs a client program against the database; stdin and stdout pass through.
target_run() {
  local program=$1
  shift
  if [[ $TARGET_KIND == container ]]; then
    docker exec -i -u postgres "$TARGET_CONTAINER" "$program" --username="$TARGET_USER" --dbname="$TARGET_DATABASE" "$@"
  else
    PGPASSFILE=$TARGET_PASSFILE "$program" --no-password --dbname="$TARGET_URL" "$@"
  fi
}
