#!/usr/bin/env bash
# The main job on a default local repository: make a sample folder, snapshot it, list the
# snapshots and files, restore one file and compare. Safe to run again: each run adds a
# snapshot to the same repository, and the second one reads nothing unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
base="${SNAPFS_DEMO_DIR:-$HOME/.local/share/snapfs-demo}"
export SNAPFS_REPO="${SNAPFS_REPO:-$base/repo}"
export SNAPFS_PASSWORD_FILE="${SNAPFS_PASSWORD_FILE:-$base/password}"
snapfs=.venv/bin/snapfs
mkdir -p "$base"
if [ ! -s "$SNAPFS_PASSWORD_FILE" ]; then
    (umask 077; head -c 24 /dev/urandom | base64 > "$SNAPFS_PASSWORD_FILE")
fi
if [ ! -d "$base/sample" ]; then
    .venv/bin/python tools/sample.py "$base/sample"
fi
if [ ! -e "$SNAPFS_REPO/config" ]; then
    $snapfs init
fi
echo "== snapfs snapshot $base/sample"
$snapfs snapshot "$base/sample" --tag demo
echo "== snapfs snapshots"
$snapfs snapshots
echo "== snapfs ls latest:$base/sample/data"
$snapfs ls "latest:$base/sample/data"
rm -rf "$base/restored"
$snapfs restore "latest:$base/sample/docs/readme.txt" --target "$base/restored"
cmp "$base/sample/docs/readme.txt" "$base/restored/readme.txt"
echo "== restored $base/restored/readme.txt, identical to the original"

mnt="$base/mnt"
mkdir -p "$mnt"
if grep -q " $mnt fuse" /proc/mounts; then $snapfs umount "$mnt"; fi
echo "== snapfs mount $mnt"
$snapfs mount "$mnt"
trap '$snapfs umount "$mnt" 2>/dev/null || true' EXIT
ls "$mnt" "$mnt/snapshots"
cp -a "$mnt/latest$base/sample/docs/readme.txt" "$base/restored/from-mount.txt"
cmp "$base/sample/docs/readme.txt" "$base/restored/from-mount.txt"
echo "== copied readme.txt back out of the mount: identical to the original"
$snapfs umount "$mnt"
trap - EXIT
echo "repository: $SNAPFS_REPO   password file: $SNAPFS_PASSWORD_FILE"
