#!/usr/bin/env bash
# dmctl against restic on the same S3 server (Ceph radosgw on 127.0.0.1) in one run: backup of a
# tree and of a generated SQL dump, and their restores. Prints wall time and peak RSS per step and
# the dmctl/restic ratios (below 1.00: dmctl is faster / smaller), then checks both round trips.
#   bench/cloud-bench.sh                 (from anywhere; builds nothing: run `npm run build` first)
# Env: BENCH_DIR   a folder whose tree/ is backed up when present (default: a copy of /usr/share/doc)
#                  (BENCH_DIR=~/.cache/dmctl-bench ROWS=4000000: npm run bench's tree and dump, 687 MB and 366 MB)
#      ROWS        rows of the generated dump (default 1000000, about 100 MB; gen-dump.mjs)
#      ROUNDS      rounds of both tools (default 1). Round 1 runs restic first, round 2 dmctl first,
#                  and so on; with more than one, each round's table is printed, then each tool's
#                  median time and size and the median of the rounds' ratios.
#                  (Which tool goes second matters on this VM: see "Session 18" in README.md.)
#                  Each round keeps its repositories: radosgw's 8 GiB in RAM hold about six rounds
#                  of the bench tree and dump.
#      KEEP=1      keep the work folder (logs) instead of removing it
#      BENCH_SETTLE=0  do not wait for ext4 to reuse an earlier run's deleted inodes (bench/settle.sh)
# Needs radosgw (scripts/install-test-servers.sh), restic, GNU time, and a built dist/.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${DM_SHARED_DIR:-$ROOT/../shared}
GEN_DUMP=$SHARED/bench/gen-dump.mjs
DMCTL="node $ROOT/bin/run.js"
command -v restic >/dev/null || { echo "cloud-bench: restic is not installed" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "cloud-bench: GNU time (/usr/bin/time) is not installed" >&2; exit 2; }
[ -f "$ROOT/dist/test/support/servers.js" ] || { echo "cloud-bench: run npm run build first" >&2; exit 2; }
[ -f "$GEN_DUMP" ] || { echo "cloud-bench: $GEN_DUMP not found (set DM_SHARED_DIR)" >&2; exit 2; }

. "$ROOT/bench/settle.sh"
# The work folder of an earlier run was deleted at its end: wait until ext4 reuses those inodes.
bench_settle /tmp
W=$(mktemp -d /tmp/dmctl-cloud-bench-XXXXXX)
SERVER_PID=
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
  if [ "${KEEP:-0}" = 1 ]; then echo "work folder kept: $W"; else bench_free "$W"; fi
}
trap cleanup EXIT

# --- data
if [ -n "${BENCH_DIR:-}" ] && [ -d "$BENCH_DIR/tree" ]; then TREE=$BENCH_DIR/tree; else TREE=$W/tree; cp -a /usr/share/doc "$TREE"; fi
ROWS=${ROWS:-1000000}
node "$GEN_DUMP" "$ROWS" 1 > "$W/dump.sql"
echo "tree: $TREE ($(du -sm "$TREE" | cut -f1) MB, $(find "$TREE" | wc -l) entries); dump: $ROWS rows ($(du -sm "$W/dump.sql" | cut -f1) MB)"

# --- radosgw, started and stopped through the test helper (random ports, objects in RAM)
cat > "$W/server.mjs" <<EOF
import { startRadosgw } from '$ROOT/dist/test/support/servers.js';
import fs from 'node:fs';
// (ceph's OSD now and then fails to join with 'wrong fsid'; startRadosgw retries once, we twice more)
let rgw;
for (let i = 0; !rgw; i++) {
  try { rgw = await startRadosgw({ memstoreBytes: 8 * 1024 ** 3 }); } catch (e) { if (i >= 2) throw e; }
}
fs.writeFileSync('$W/endpoint', rgw.endpoint);
const stop = async () => { await rgw.stop(); process.exit(0); };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
setInterval(() => {}, 1 << 30);
EOF
node "$W/server.mjs" > "$W/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 400); do [ -s "$W/endpoint" ] && break; kill -0 $SERVER_PID 2>/dev/null || { cat "$W/server.log" >&2; exit 1; }; sleep 0.5; done
[ -s "$W/endpoint" ] || { echo "cloud-bench: radosgw did not start" >&2; exit 1; }
EP=$(cat "$W/endpoint")
echo "radosgw: $EP"

export AWS_ACCESS_KEY_ID=DMTESTACCESSKEY AWS_SECRET_ACCESS_KEY=DMTESTSECRETKEY
export RESTIC_PASSWORD=bench DM_PASSWORD=bench RESTIC_CACHE_DIR=$W/restic-cache HOME=$W/home
unset RESTIC_REPOSITORY DM_REPOSITORY DM_PASSWORD_FILE RESTIC_PASSWORD_FILE
mkdir -p "$HOME"

declare -A WALL RSS
run() { # run TOOL STEP CMD...
  local tool=$1 step=$2; shift 2
  if ! /usr/bin/time -f "%e %M" -o "$W/.t" "$@" >"$W/$tool.$step.log" 2>&1; then
    echo "!! $tool $step failed:" >&2; tail -5 "$W/$tool.$step.log" >&2; KEEP=1
  fi
  read -r w m <"$W/.t"; WALL[$tool.$step.$ROUND]=$w; RSS[$tool.$step.$ROUND]=$m
}

bench_tool() { # bench_tool TOOL: its whole sequence, into a repository of this round's own
  local tool=$1 R=s3:$EP/bench-$1-$ROUND/repo
  if [ $tool = restic ]; then
    run restic init restic -r "$R" init --repository-version 2
    run restic backup-tree restic -r "$R" backup "$TREE" --host bench
    run restic backup-dump sh -c "restic -r '$R' backup --stdin --stdin-filename dump.sql --host bench < '$W/dump.sql'"
    run restic restore-tree restic -r "$R" restore latest --path "$TREE" --target "$W/restore-restic"
    run restic restore-dump sh -c "restic -r '$R' dump latest --path /dump.sql /dump.sql > '$W/restore-restic.sql'"
  else
    run dmctl init $DMCTL repo init -r "$R"
    run dmctl backup-tree $DMCTL backup -r "$R" "$TREE" --host bench
    run dmctl backup-dump sh -c "$DMCTL backup-stream -r '$R' --name dump.sql --host bench < '$W/dump.sql'"
    run dmctl restore-tree $DMCTL restore -r "$R" latest --path "$TREE" --target "$W/restore-dmctl"
    run dmctl restore-dump sh -c "$DMCTL restore-stream -r '$R' latest --path /dump.sql > '$W/restore-dmctl.sql'"
  fi
  # (the restores are kept until the end: deleting 50k files now would slow the next round's creates)
  [ "$ROUND" = "$ROUNDS" ] || mv "$W/restore-$tool" "$W/restore-$tool.$ROUND"
}

STEPS="backup-tree backup-dump restore-tree restore-dump"
ratio() { awk -v d="$1" -v x="$2" 'BEGIN{print (x>0?d/x:0)}'; } # ratio DMCTL RESTIC (0 when restic has none)
med() { sort -g | awk '{v[NR]=$1} END{print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }
median() { # median ARRAY KEY: of the rounds' values
  local -n a=$1; local r
  for r in $(seq 1 "$ROUNDS"); do echo "${a[$2.$r]:-0}"; done | med
}
median_ratio() { # median_ratio ARRAY STEP: of the rounds' dmctl/restic ratios
  local -n b=$1; local r
  for r in $(seq 1 "$ROUNDS"); do ratio "${b[dmctl.$2.$r]:-0}" "${b[restic.$2.$r]:-0}"; done | med
}
table() { # table ROUND|median (for medians: each tool's median time and size, and the median of the rounds' ratios)
  printf '%-14s %9s %9s %7s   %9s %9s %7s\n' step restic_s dmctl_s ratio restic_MB dmctl_MB ratio
  local step rw dw rt xm dm rr
  for step in $STEPS; do
    if [ "$1" = median ]; then
      rw=$(median WALL restic.$step) dw=$(median WALL dmctl.$step) rt=$(median_ratio WALL $step)
      xm=$(median RSS restic.$step) dm=$(median RSS dmctl.$step) rr=$(median_ratio RSS $step)
    else
      rw=${WALL[restic.$step.$1]:-0} dw=${WALL[dmctl.$step.$1]:-0} rt=$(ratio "$dw" "$rw")
      xm=${RSS[restic.$step.$1]:-0} dm=${RSS[dmctl.$step.$1]:-0} rr=$(ratio "$dm" "$xm")
    fi
    awk -v s=$step -v rw=$rw -v dw=$dw -v rt=$rt -v xm=$xm -v dm=$dm -v rr=$rr \
      'BEGIN{printf "%-14s %9.2f %9.2f %7.2f   %9.1f %9.1f %7.2f\n", s, rw, dw, rt, xm/1024, dm/1024, rr}'
  done
}

ROUNDS=${ROUNDS:-1}
for ROUND in $(seq 1 "$ROUNDS"); do
  if [ $((ROUND % 2)) = 1 ]; then order="restic dmctl"; else order="dmctl restic"; fi
  for tool in $order; do bench_tool $tool; done
  echo
  [ "$ROUNDS" = 1 ] || echo "round $ROUND ($order):"
  table $ROUND
done
if [ "$ROUNDS" != 1 ]; then
  echo
  echo "medians of $ROUNDS rounds:"
  table median
fi
echo
for tool in restic dmctl; do
  cmp -s "$W/dump.sql" "$W/restore-$tool.sql" && d=identical || d=DIFFERENT
  diff -r --no-dereference "$TREE" "$W/restore-$tool$TREE" >/dev/null 2>&1 && t=identical || t=DIFFERENT
  echo "$tool round trips: tree $t, dump $d"
done
