#!/usr/bin/env bash
# Installs the peers tools/bench.py compares snapfs with: restic (Debian package) and
# BorgBackup 1.4 (PyPI, built against Debian's libraries, in .venv-borg with pyfuse3).
# Idempotent. Run tools/setup.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for p in restic libssl-dev libacl1-dev liblz4-dev libzstd-dev libxxhash-dev pkg-config time; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ ! -x .venv-borg/bin/borg ]; then
    python3 -m venv .venv-borg
    .venv-borg/bin/pip install -q "borgbackup==1.4.*" pyfuse3 2>&1 | grep -v -i warning || true
fi
restic version
.venv-borg/bin/borg --version
