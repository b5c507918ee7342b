#!/bin/sh
# Makes a private certificate authority and the certificates of a TLS trial of pgheal
# (docker-compose.yml runs it once, in a one-shot service, into the `certs` volume):
#
#   ca.crt                     the authority clients and pgheal trust (sslrootcert)
#   postgres.crt, postgres.key PostgreSQL's certificate, for the host names in POSTGRES_HOSTS
#   pgheal.crt, pgheal.key     pgheal's certificate for its clients, for PGHEAL_HOSTS
#
#   deploy/make-certs.sh OUT_DIR
#
# Environment: POSTGRES_HOSTS (default "postgres"), PGHEAL_HOSTS (default
# "pgheal localhost 127.0.0.1"): names and IP addresses the certificates are valid for.
# POSTGRES_UID (default 999, the postgres user of the postgres image) and PGHEAL_UID (default
# 6432, the pgheal user of pgheal's image): when run as root, each key is given to the user who
# reads it, mode 0600 (PostgreSQL refuses a key others can read).
#
# Existing files are kept, so running it again changes nothing. The CA's key stays in OUT_DIR:
# this is for trials and tests. In production, use certificates from your own CA.
set -eu
out=${1:?usage: make-certs.sh OUT_DIR}
mkdir -p "$out"
cd "$out"
umask 077

# subjectAltName entries for a list of names and addresses.
san() {
  list=""
  for h in $1; do
    case "$h" in
      *[!0-9.:a-fA-F]* | "") entry="DNS:$h" ;;
      *) entry="IP:$h" ;;
    esac
    list="${list:+$list,}$entry"
  done
  printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' "$list"
}

if [ ! -s ca.crt ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=pgheal trial CA" \
    -keyout ca.key -out ca.crt 2>/dev/null
fi

issue() { # name hosts
  [ -s "$1.crt" ] && return 0
  first=${2%% *}
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$first" -keyout "$1.key" -out "$1.csr" 2>/dev/null
  san "$2" >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 \
    -extfile "$1.ext" -out "$1.crt" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
issue postgres "${POSTGRES_HOSTS:-postgres}"
issue pgheal "${PGHEAL_HOSTS:-pgheal localhost 127.0.0.1}"

chmod 0644 ca.crt postgres.crt pgheal.crt
chmod 0600 ca.key postgres.key pgheal.key
if [ "$(id -u)" = 0 ]; then
  chown "${POSTGRES_UID:-999}" postgres.key
  chown "${PGHEAL_UID:-6432}" pgheal.key
fi
echo "certificates in $out"
