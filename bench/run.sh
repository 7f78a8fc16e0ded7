#!/usr/bin/env bash
# npm run bench: dmctl against restic on the same data in one run (wall time and peak RSS ratios).
# Uses the workplace's side-by-side script (shared/bench/compare-restic.sh) when it sits beside the
# checkout, so both tools run under the same harness; BENCH_DIR and ROWS pass through. Then prints
# the bytes each tool added for the second dump (from the "Added to the repo" line both print).
# The previous run's repositories and restores are moved aside first and deleted after the
# measurements, not just before them (bench/settle.sh says why; BENCH_SETTLE=0 skips its wait).
set -eu
cd "$(dirname "$0")/.."
. bench/settle.sh
npm run -s build
SHARED=${DM_SHARED_DIR:-../shared}
if [ ! -f "$SHARED/bench/compare-restic.sh" ]; then
  echo "shared/bench/compare-restic.sh not found next to this checkout; set DM_SHARED_DIR" >&2
  exit 2
fi
B=${BENCH_DIR:-$HOME/.cache/dmctl-bench}
mkdir -p "$B/.trash/$$"
for p in repo-restic repo-dmctl restore-restic restore-dmctl restore-restic.sql restore-dmctl.sql; do
  if [ -e "$B/$p" ]; then mv "$B/$p" "$B/.trash/$$/"; fi
done
bench_settle "$B"
bash "$SHARED/bench/compare-restic.sh" "$PWD/bin/run.js"
bench_free "$B/.trash"
bytes() { # "Added to the repo[sitory]: X (Y stored)" -> Y in bytes (what the repository grew by)
  grep -h -o -E 'Added to the repo(sitory)?: [0-9.]+ [KMGT]?i?B \([0-9.]+ [KMGT]?i?B stored' "$1" | head -1 |
    sed -E 's/.*\(([0-9.]+) ([KMGT]?i?B) stored/\1 \2/' |
    awk '{m=1; if($2=="KiB")m=1024; if($2=="MiB")m=1048576; if($2=="GiB")m=1073741824; printf "%d", $1*m}'
}
r=$(bytes "$B/restic.stream-dump2.log" || echo 0); d=$(bytes "$B/dmctl.stream-dump2.log" || echo 0)
awk -v r="$r" -v d="$d" 'BEGIN{printf "stored bytes added by the second dump: restic %.1f MiB, dmctl %.1f MiB, ratio %.2f\n", r/1048576, d/1048576, (r>0?d/r:0)}'
