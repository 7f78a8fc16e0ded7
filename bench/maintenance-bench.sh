#!/usr/bin/env bash
# Maintenance benchmark: dmctl vs restic 0.14 on copies of the same repository (a tree plus two
# database dumps, one day apart): `forget --keep-last 1 --prune` (the first dump's snapshot goes,
# its unshared chunks are pruned, partly used packs repacked) and then `check --read-data`.
# Prints wall time and peak RSS per step and the dmctl/restic ratios (below 1.00: dmctl is faster
# or smaller).
#   bench/maintenance-bench.sh [DMCTL_COMMAND]        (default ./bin/run.js, from the project root)
# Env: BENCH_DIR (default ~/.cache/dmctl-bench, shared with shared/bench/compare-restic.sh),
#      ROWS (dump rows, default 4000000), TREE_SRC (default /usr/share),
#      BASE_TOOL (restic|dmctl: which tool writes the base repository, default restic).
# restic gets an empty cache directory for every step, as dmctl keeps none.
set -u
DMCTL=${1:-./bin/run.js}
SHARED=$(cd "$(dirname "$0")/../../shared/bench" 2>/dev/null && pwd || echo /work/shared/bench)
B=${BENCH_DIR:-$HOME/.cache/dmctl-bench}; mkdir -p "$B"
command -v restic >/dev/null || { echo "restic is not installed"; exit 2; }
[ -d "$B/tree" ] || cp -a "${TREE_SRC:-/usr/share}" "$B/tree"
[ -s "$B/dump1.sql" ] || node "$SHARED/gen-dump.mjs" "${ROWS:-4000000}" 1 > "$B/dump1.sql"
[ -s "$B/dump2.sql" ] || node "$SHARED/gen-dump.mjs" "${ROWS:-4000000}" 2 > "$B/dump2.sql"
export RESTIC_PASSWORD=bench DM_PASSWORD=bench
BASE=$B/maint-base-${BASE_TOOL:-restic}
if [ ! -s "$BASE/config" ]; then
  rm -rf "$BASE"
  echo "building the base repository with ${BASE_TOOL:-restic} in $BASE ..."
  if [ "${BASE_TOOL:-restic}" = restic ]; then
    restic -r "$BASE" init --repository-version 2 -q
    restic -r "$BASE" backup -q --host bench "$B/tree"
    restic -r "$BASE" backup -q --host bench --stdin --stdin-filename db.sql < "$B/dump1.sql"
    restic -r "$BASE" backup -q --host bench --stdin --stdin-filename db.sql < "$B/dump2.sql"
  else
    DM_REPOSITORY=$BASE $DMCTL repo init >/dev/null
    DM_REPOSITORY=$BASE $DMCTL backup -q --host bench "$B/tree" >/dev/null
    DM_REPOSITORY=$BASE $DMCTL backup-stream -q --host bench --name db.sql < "$B/dump1.sql" >/dev/null
    DM_REPOSITORY=$BASE $DMCTL backup-stream -q --host bench --name db.sql < "$B/dump2.sql" >/dev/null
  fi
fi
declare -A WALL RSS CPU
run() { # run TOOL STEP CMD...
  local tool=$1 step=$2; shift 2
  rm -rf "$B/restic-cache"; mkdir -p "$B/restic-cache"
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  /usr/bin/time -f "%e %M %U %S" -o "$B/.t" "$@" >"$B/$tool.$step.log" 2>&1 || echo "!! $tool $step failed: see $B/$tool.$step.log"
  read -r w m u s <"$B/.t"; WALL[$tool.$step]=$w; RSS[$tool.$step]=$m; CPU[$tool.$step]=$(awk -v u=$u -v s=$s 'BEGIN{print u+s}')
}
for tool in restic dmctl; do
  R=$B/maint-$tool; rm -rf "$R"; cp -a "$BASE" "$R"
  if [ $tool = restic ]; then
    export RESTIC_CACHE_DIR=$B/restic-cache
    run restic forget-prune restic -r "$R" forget --keep-last 1 --prune
    run restic check-read-data restic -r "$R" check --read-data
  else
    run dmctl forget-prune env DM_REPOSITORY="$R" $DMCTL forget --keep-last 1 --prune -q
    run dmctl check-read-data env DM_REPOSITORY="$R" $DMCTL check --read-data -q
  fi
done
echo "base repository: $(du -sm "$BASE" | cut -f1) MB; after prune: restic $(du -sm "$B/maint-restic" | cut -f1) MB, dmctl $(du -sm "$B/maint-dmctl" | cut -f1) MB"
echo "(wall = elapsed seconds; cpu = user+sys seconds, steadier on a shared machine; MB = peak RSS)"
printf '%-16s %8s %8s %6s   %8s %8s %6s   %8s %8s %6s\n' step restic_s dmctl_s ratio rst_cpu dm_cpu ratio rst_MB dm_MB ratio
for step in forget-prune check-read-data; do
  rw=${WALL[restic.$step]:-0} dw=${WALL[dmctl.$step]:-0} rm=${RSS[restic.$step]:-0} dm=${RSS[dmctl.$step]:-0}
  rc=${CPU[restic.$step]:-0} dc=${CPU[dmctl.$step]:-0}
  awk -v s=$step -v rw=$rw -v dw=$dw -v rc=$rc -v dc=$dc -v rm=$rm -v dm=$dm 'BEGIN{printf "%-16s %8.2f %8.2f %6.2f   %8.2f %8.2f %6.2f   %8d %8d %6.2f\n", s, rw, dw, (rw>0?dw/rw:0), rc, dc, (rc>0?dc/rc:0), rm/1024, dm/1024, (rm>0?dm/rm:0)}'
done
# Both results must be consistent for the other tool too.
restic -r "$B/maint-dmctl" check -q >/dev/null 2>&1 && echo "restic check of dmctl's result: ok" || echo "restic check of dmctl's result: FAILED"
