#!/bin/sh
# Start SeaweedFS (master + volume + filer + S3 gateway in one process) with S3 credentials
# taken from the environment: S3_ACCESS_KEY / S3_SECRET_KEY (docker-compose.yml passes them
# from .env); empty keys and the .env.example placeholders are refused.  SeaweedFS reads S3
# identities from a JSON file, so it is written here, at start, into a private tmpfs (never
# into the image or the data volume).  No secret is printed.
set -eu

WEED="${WEED:-/usr/bin/weed}"
CONFIG="${S3_CONFIG_FILE:-/run/seaweedfs/s3.json}"
DATA_DIR="${WEED_DATA_DIR:-/data}"

fail() { echo "seaweedfs-start: $*" >&2; exit 64; }

[ -n "${S3_ACCESS_KEY:-}" ] || fail "S3_ACCESS_KEY is empty; set it in .env (see .env.example)"
[ -n "${S3_SECRET_KEY:-}" ] || fail "S3_SECRET_KEY is empty; set it in .env (see .env.example)"
# The committed .env.example holds "change-me-..." placeholders: never serve with them.
placeholder() { fail "$1 is still the .env.example placeholder; generate one (see .env.example)"; }
case "$S3_ACCESS_KEY" in *change-me*) placeholder S3_ACCESS_KEY ;; esac
case "$S3_SECRET_KEY" in *change-me*) placeholder S3_SECRET_KEY ;; esac
for value in "$S3_ACCESS_KEY" "$S3_SECRET_KEY"; do
  case "$value" in
    *[!A-Za-z0-9+/=_.-]*) fail "S3 keys may only contain A-Z a-z 0-9 + / = _ . -" ;;
  esac
done
[ "${#S3_SECRET_KEY}" -ge 16 ] || fail "S3_SECRET_KEY is shorter than 16 characters"

umask 077
mkdir -p "$(dirname "$CONFIG")"
cat > "$CONFIG" <<JSON
{
  "identities": [
    {
      "name": "aspects",
      "credentials": [{"accessKey": "$S3_ACCESS_KEY", "secretKey": "$S3_SECRET_KEY"}],
      "actions": ["Admin", "Read", "Write", "List", "Tagging"]
    }
  ]
}
JSON

exec "$WEED" server \
  -dir="$DATA_DIR" \
  -ip.bind=0.0.0.0 \
  -master.volumeSizeLimitMB=1024 \
  -volume.max=0 \
  -s3 \
  -s3.port=8333 \
  -s3.config="$CONFIG" \
  "$@"
