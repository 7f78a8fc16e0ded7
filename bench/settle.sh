# Sourced by bench/run.sh and bench/cloud-bench.sh: keeps the previous run's deleted files out of the
# next run's tree restore.
#
# Why: ext4 mounted without a journal (this workplace's root filesystem; /proc/fs/jbd2 is empty)
# will not reuse a freed inode for 60 s after its deletion, or for 360 s while the inode-table block
# holding it is dirty, and every file created meanwhile scans past each such inode one buffer lookup
# at a time (fs/ext4/ialloc.c, find_inode_bit -> recently_deleted). A restore dirties those blocks
# itself as it allocates inodes in them, so after an `rm -rf` of the previous run's 47k-file restore,
# the next restore of the same tree is bound by that scan for six minutes: `perf` shows
# find_get_block_common, recently_deleted and find_inode_bit at the top of the profile and 15-22 s of
# wall time instead of 4-5 s, for restic and dmctl alike, by an amount that depends on timing. The
# harness deletes the previous outputs just before each tool's run, so its tree-restore figures
# measured the kernel, not the tools.
#
# What: outputs of earlier runs are moved aside (a rename frees no inode) before the measurements
# and deleted after them, and a run waits until the inodes the last deletion freed are reusable.
# Nothing waits on other filesystems, or with BENCH_SETTLE=0.

SETTLE_STAMP=${TMPDIR:-/tmp}/dmctl-bench.freed

# True when DIR is on ext4 without a journal.
bench_nojournal_ext4() {
  local dev fstype
  fstype=$(df --output=fstype "$1" 2>/dev/null | tail -1) || return 1
  [ "$fstype" = ext4 ] || return 1
  dev=$(basename "$(df --output=source "$1" | tail -1)")
  ! compgen -G "/proc/fs/jbd2/$dev-*" >/dev/null
}

# bench_free PATH...: deletes, flushes the inode tables, records when.
bench_free() {
  rm -rf "$@"
  sync
  date +%s >"$SETTLE_STAMP"
}

# bench_settle DIR: waits until inodes freed by the last bench_free can be reused without the scan.
bench_settle() {
  [ "${BENCH_SETTLE:-1}" = 0 ] && return 0
  bench_nojournal_ext4 "$1" || return 0
  [ -s "$SETTLE_STAMP" ] || return 0
  local left=$(($(cat "$SETTLE_STAMP") + 365 - $(date +%s)))
  [ "$left" -gt 0 ] || return 0
  echo "bench: waiting ${left}s until ext4 (no journal) reuses the inodes an earlier run freed; BENCH_SETTLE=0 skips (see bench/settle.sh)" >&2
  sleep "$left"
}
