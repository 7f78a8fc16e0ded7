#!/usr/bin/env bash
# npm run bench: dmctl against restic on the same data in one run (wall time and peak RSS ratios).
# Uses the workplace's side-by-side script (shared/bench/compare-restic.sh) when it sits beside the
# checkout, so both tools run under the same harness; BENCH_DIR and ROWS pass through.
set -eu
cd "$(dirname "$0")/.."
npm run -s build
SHARED=${DM_SHARED_DIR:-../shared}
if [ -x "$SHARED/bench/compare-restic.sh" ] || [ -f "$SHARED/bench/compare-restic.sh" ]; then
  exec bash "$SHARED/bench/compare-restic.sh" "$PWD/bin/run.js"
fi
echo "shared/bench/compare-restic.sh not found next to this checkout; set DM_SHARED_DIR" >&2
exit 2
