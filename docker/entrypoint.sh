#!/bin/sh
# Container entrypoint: every setting comes from BITPATCH_* environment variables
# (BITPATCH_HOST, BITPATCH_PORT, BITPATCH_STORE, BITPATCH_ADMIN_TOKEN, ...). Extra arguments
# are passed to `bitpatch serve` as flags.
set -eu
store="${BITPATCH_STORE:-/data/patches}"
case "$store" in
  s3://*) ;;  # an object store: credentials come from the AWS_* variables
  *)
    mkdir -p "$store"
    if [ ! -w "$store" ]; then
      echo "bitpatch: the patch store $store is not writable by uid $(id -u); fix the volume's owner" >&2
      exit 1
    fi
    ;;
esac
if [ -z "${BITPATCH_ADMIN_TOKEN:-}" ]; then
  echo "bitpatch: warning: BITPATCH_ADMIN_TOKEN is not set; anyone who reaches the port can upload and delete patches" >&2
fi
exec bitpatch serve "$@"
