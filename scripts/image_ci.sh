#!/usr/bin/env bash
# CI: build the CPU image on a host with no container registry, then check it running
# (scripts/check_image.py). Needs root and Debian's packages. Steps:
#   1. install docker.io and debootstrap; start dockerd (stopped by its PID on exit)
#   2. make the base image: Debian bookworm (debootstrap minbase + python3, python3-venv), with
#      this host's CA bundle, since outbound HTTPS here goes through a proxy with its own CA
#   3. serve this host's CPU torch wheel on 127.0.0.1 as the build's torch index
#   4. scripts/build_image.sh --variant cpu (host network: pip reaches PyPI), then the checks
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$(mktemp -d)
base=bitpatch-base:bookworm
image=bitpatch:cpu
dockerd_pid="" index_pid=""

cleanup() {
  [ -z "$index_pid" ] || kill "$index_pid" 2>/dev/null || true
  if [ -n "$dockerd_pid" ]; then
    kill "$dockerd_pid" 2>/dev/null || true
    while kill -0 "$dockerd_pid" 2>/dev/null; do sleep 0.2; done
  fi
  rm -rf "$work"
}
trap cleanup EXIT

install_tools() {
  command -v dockerd >/dev/null && command -v debootstrap >/dev/null && return
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null
}

start_dockerd() {
  if docker info >/dev/null 2>&1; then
    echo "image: using the Docker engine already running"
    return
  fi
  dockerd >"$work/dockerd.log" 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 100); do docker info >/dev/null 2>&1 && return; sleep 0.2; done
  cat "$work/dockerd.log" >&2
  echo "image: dockerd did not start" >&2
  exit 1
}

make_base() {
  docker image inspect "$base" >/dev/null 2>&1 && return
  local rootfs=$work/rootfs
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$rootfs" http://deb.debian.org/debian >"$work/debootstrap.log" \
    || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$rootfs/etc/pip.conf"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | docker import - "$base" >/dev/null
}

serve_torch_wheel() {
  mkdir -p "$work/index/torch"
  .venv/bin/python -m pip download -q --no-deps torch==2.13.0 -d "$work/index/torch"
  local port
  port=$(.venv/bin/python -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
  .venv/bin/python -m http.server --bind 127.0.0.1 "$port" --directory "$work/index" \
    >"$work/index.log" 2>&1 &
  index_pid=$!
  torch_index=http://127.0.0.1:$port/
}

install_tools
start_dockerd
make_base
serve_torch_wheel
start=$(date +%s)
"$root/scripts/build_image.sh" --variant cpu --base "$base" --torch-index "$torch_index" \
  --network host --tag "$image" >"$work/build.log" 2>&1 || { tail -40 "$work/build.log" >&2; exit 1; }
build_seconds=$(( $(date +%s) - start ))
.venv/bin/python scripts/check_image.py "$image" --build-seconds "$build_seconds"
