#!/usr/bin/env bash
# Usage: scripts/rotate-webhook-secret.sh add    [FILE]   < new-secret     add a signing secret (read from stdin)
#        scripts/rotate-webhook-secret.sh retire FINGERPRINT [FILE]        remove the secret with that fingerprint
#        scripts/rotate-webhook-secret.sh list   [FILE]                    show the fingerprints in force
#        scripts/rotate-webhook-secret.sh --help                           show this text
#
# FILE defaults to $STRIPE_WEBHOOK_SECRET_FILE, else the development secret `npm start` keeps in
# ${DATA_DIR:-.data}/webhook-secret; the script says which file it used.
# Rotation without downtime: roll the secret in Stripe (both stay valid for a while and Stripe signs with
# both), `add` the new one, watch stripe_webhook_secret_verifications_total{fingerprint=…} on /metrics until
# the old fingerprint stops growing, then `retire` it. The service reloads the file by itself; nothing restarts.
# The secret is never taken from argv (visible in `ps`) and never printed: only its fingerprint is.
set -Eeuo pipefail

die() { echo "rotate-webhook-secret: $*" >&2; exit 1; }

fingerprint() { printf '%s' "$1" | sha256sum | cut -c1-12; }

secrets_in() { sed -e 's/\r$//' -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' "$1" | grep -v '^$' || true; }

# Writes stdin to FILE by rename, keeping its owner and mode, so the service never reads a half-written file.
replace_file() {
  local file=$1 dir tmp
  dir=$(dirname -- "$file")
  tmp=$(mktemp "$dir/.$(basename -- "$file").XXXXXX")
  trap 'rm -f -- "$tmp"' RETURN
  cat >"$tmp"
  if [[ -e $file ]]; then
    chmod --reference="$file" -- "$tmp"
    chown --reference="$file" -- "$tmp" 2>/dev/null || true
  else
    chmod 0600 -- "$tmp"
  fi
  mv -f -- "$tmp" "$file"
}

list() {
  local file=$1 n=0 secret
  [[ -r $file ]] || die "cannot read $file: give the secrets file as FILE, or set STRIPE_WEBHOOK_SECRET_FILE"
  while IFS= read -r secret; do
    n=$((n + 1))
    echo "$n $(fingerprint "$secret")"
  done < <(secrets_in "$file")
}

add() {
  local file=$1 secret
  if [[ -t 0 ]]; then read -r -s -p 'New webhook signing secret (whsec_…): ' secret; echo >&2; else IFS= read -r secret || true; fi
  secret=$(printf '%s' "$secret" | tr -d '[:space:]')
  [[ $secret == whsec_?* ]] || die 'the secret must start with "whsec_" (copy it from the Stripe endpoint)'
  if [[ -e $file ]] && secrets_in "$file" | grep -qxF -- "$secret"; then
    echo "already present: $(fingerprint "$secret")" >&2
    return 0
  fi
  { [[ -e $file ]] && secrets_in "$file"; printf '%s\n' "$secret"; } | replace_file "$file"
  echo "added $(fingerprint "$secret"); secrets in force:" >&2
  list "$file"
}

retire() {
  local target=$1 file=$2 secret kept=() found=0
  [[ -r $file ]] || die "cannot read $file: give the secrets file as FILE, or set STRIPE_WEBHOOK_SECRET_FILE"
  while IFS= read -r secret; do
    if [[ $(fingerprint "$secret") == "$target" ]]; then found=1; else kept+=("$secret"); fi
  done < <(secrets_in "$file")
  ((found)) || die "no secret with fingerprint $target in $file (see: $0 list)"
  ((${#kept[@]} > 0)) || die "refusing to retire the last secret: add its successor first"
  printf '%s\n' "${kept[@]}" | replace_file "$file"
  echo "retired $target; secrets in force:" >&2
  list "$file"
}

# The comment block at the top, without its '#'.
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

usage_error() { echo "rotate-webhook-secret: $*" >&2; echo >&2; usage >&2; exit 2; }

default_file() {
  if [[ -n ${STRIPE_WEBHOOK_SECRET_FILE:-} ]]; then
    echo "$STRIPE_WEBHOOK_SECRET_FILE"
  else
    echo "${DATA_DIR:-.data}/webhook-secret"
  fi
}

# The file given, or the default; says which one, since the default depends on the environment.
secret_file() {
  local file=${1:-$(default_file)}
  if [[ -n ${1:-} ]]; then
    echo "secrets file: $file" >&2
  elif [[ -n ${STRIPE_WEBHOOK_SECRET_FILE:-} ]]; then
    echo "secrets file: $file (STRIPE_WEBHOOK_SECRET_FILE)" >&2
  else
    echo "secrets file: $file (the development secret of npm start; set STRIPE_WEBHOOK_SECRET_FILE for another)" >&2
  fi
  echo "$file"
}

main() {
  local command=${1:-} arg
  for arg in "$@"; do
    case $arg in
      -h | --help) usage; exit 0 ;;
      -*) usage_error "unknown option $arg" ;;
    esac
  done
  case $command in
    add) (($# <= 2)) || usage_error 'add takes at most a FILE'; add "$(secret_file "${2:-}")" ;;
    list) (($# <= 2)) || usage_error 'list takes at most a FILE'; list "$(secret_file "${2:-}")" ;;
    retire)
      [[ -n ${2:-} ]] || usage_error 'retire needs the FINGERPRINT of the secret to remove (see: list)'
      (($# <= 3)) || usage_error 'retire takes a FINGERPRINT and at most a FILE'
      retire "$2" "$(secret_file "${3:-}")"
      ;;
    '') usage_error 'a command is needed: add, retire or list' ;;
    *) usage_error "unknown command $command" ;;
  esac
}

main "$@"
