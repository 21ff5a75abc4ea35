#!/usr/bin/env bash
# snapfs on its own: writer and mount figures on a dataset and a large file (no peers;
# the side-by-side comparison with restic and borg is tools/bench.py).
#   usage: tools/measure.sh DATASET_DIR BIG_FILE_DIR WORK_DIR
#   e.g.:  python tools/dataset.py generate /work/data1g --size-mib 1024
#          mkdir /work/big1g && head -c 1G /dev/urandom > /work/big1g/file.bin
#          tools/measure.sh /work/data1g /work/big1g /work/measure
# Drops the page cache before each cold step (needs root). Verifies what it copies.
set -euo pipefail
data=$(realpath "$1"); big=$(realpath "$2"); work=$3
here=$(cd "$(dirname "$0")/.." && pwd)
S="$here/.venv/bin/snapfs"
export SNAPFS_PASSWORD=measure XDG_CACHE_HOME="$work/cache" SNAPFS_REPO="$work/repo"
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
rm -rf "$work"; mkdir -p "$work/mnt"
$S init -q
drop; /usr/bin/time -f "first snapshot: wall %e s, writer peak RSS %M KiB" \
    $S snapshot "$data" --json > "$work/first.json"
python3 - "$work/first.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
rate = d["bytes_read"] / d["duration"] / 2**20
print(f"  {d['bytes_read']} bytes read in {d['duration']:.2f} s = {rate:.1f} MiB/s")
PY
drop; /usr/bin/time -f "unchanged re-snapshot, cold page cache: wall %e s, peak RSS %M KiB" \
    $S snapshot "$data" -q
/usr/bin/time -f "unchanged re-snapshot, warm: wall %e s" $S snapshot "$data" -q
echo "source $(du -sb "$data" | cut -f1) bytes, repository $(du -sb "$work/repo" | cut -f1) bytes"
$S snapshot "$big" -q
first=$($S snapshots --json | python3 -c "import json,sys; print(json.load(sys.stdin)[0]['short_id'])")
drop; /usr/bin/time -f "mount ready: %e s" $S mount "$work/mnt" -q
pid=$(pgrep -f "snapfs mount $work/mnt" | head -1)
trap '$S umount "$work/mnt" 2>/dev/null || true' EXIT
snap="$work/mnt/ids/$first/"
/usr/bin/time -f "find over one snapshot, first time: %e s" find "$snap" > "$work/find.txt"
echo "  $(wc -l < "$work/find.txt") entries"
/usr/bin/time -f "find again: %e s" find "$snap" > /dev/null
file="$work/mnt/latest$big/$(ls "$big" | head -1)"
size=$(stat -c %s "$file")
drop; /usr/bin/time -f "cold sequential read of $size bytes through the mount: %e s" cat "$file" > /dev/null
drop; /usr/bin/time -f "cp -a of the small-file tree out of the mount: %e s" \
    cp -a "$snap$data/src" "$work/cp"
grep VmHWM "/proc/$pid/status" | sed 's/^/mount peak RSS: /'
$S umount "$work/mnt"; trap - EXIT
drop; /usr/bin/time -f "snapfs restore of the same file: %e s, peak RSS %M KiB" \
    $S restore "latest:$big/$(ls "$big" | head -1)" --target "$work/out" -q
cmp "$work/out/$(ls "$big" | head -1)" "$big/$(ls "$big" | head -1)" && echo "restore verified"
diff -rq "$work/cp" "$data/src" > /dev/null && echo "cp -a verified"
