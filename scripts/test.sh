#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine with Node 20:
#   installs what the tests need (restic, rclone, Ceph radosgw, attr, zstd and the compilers npm ci
#   needs for the zstd-napi addon via apt-get as root;
#   firebase-tools into .cache/firebase; npm packages from the lockfile), builds, and runs every test
#   file with node's test runner. This is the command the README gives and .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ]; then
  missing=()
  for p in attr zstd g++ make python3; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
fi
bash scripts/install-test-servers.sh
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
npm run -s build

# Every compiled test file; integration/interop files start their own servers on 127.0.0.1.
# Peak-memory measurements run last and alone: a second test process on the same cores changes the
# timing of garbage collection and disk writes, and with it the peaks being compared.
alone=(dist/test/integration/stream-memory.test.js)
mapfile -t files < <(find dist/test -name '*.test.js' | sort | grep -v -x -F "${alone[@]/#/-e}")
status=0
node --test --test-concurrency="${DM_TEST_CONCURRENCY:-2}" --test-timeout=900000 --test-reporter=spec "${files[@]}" || status=$?
node --test --test-concurrency=1 --test-timeout=900000 --test-reporter=spec "${alone[@]}" || status=$?
exit "$status"
