#!/usr/bin/env bash
# Installs what the peer benchmarks in bench/peers/ need: Debian's python3-limits and
# python3-redis (for limits_bench.py, run with /usr/bin/python3), python3-matplotlib (for
# report.py's plots), redis-server with redis-tools and nginx, and the pinned
# npm packages of package-lock.json (for rlf_bench.js, which needs Node.js >= 20).
# Idempotent, and silent when everything is already present.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# Debian packages, installed only when missing (as scripts/install-deps.sh does).
packages=(python3-limits python3-redis python3-matplotlib redis-server redis-tools nginx)
missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench/peers/install.sh: installing ${missing[*]}" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q >/dev/null
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

# Node.js itself is not installed here: Debian 12's nodejs is 18, and ioredis 6 wants 20.
node_major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
if [ "$node_major" -lt 20 ] || ! command -v npm >/dev/null; then
  echo "bench/peers/install.sh: rlf_bench.js needs Node.js >= 20 with npm (e.g. NodeSource's nodejs)" >&2
  exit 1
fi

# npm packages: (re)installed from the lock file when node_modules is missing, or older than
# package.json or package-lock.json (npm keeps its own copy of the lock in node_modules).
installed="$here/node_modules/.package-lock.json"
if [ ! -f "$installed" ] || [ "$here/package-lock.json" -nt "$installed" ] ||
  [ "$here/package.json" -nt "$installed" ]; then
  echo "bench/peers/install.sh: npm ci" >&2
  npm ci --prefix "$here" --no-audit --no-fund --loglevel=error >/dev/null
fi
