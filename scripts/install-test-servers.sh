#!/bin/bash
# Installs the real servers dmctl's integration tests run against (see ../shared/testenv/README.md):
#   Ceph radosgw (S3), rclone (restic REST peer), restic (format oracle) via apt-get, when missing;
#   firebase-tools (GCS emulator) into a separate prefix, .cache/firebase, never into package.json (312 MB).
# azurite comes from the project's devDependencies. Idempotent; needs root for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v radosgw >/dev/null || need+=(radosgw)
command -v ceph-mon >/dev/null || need+=(ceph-mon)
command -v ceph-osd >/dev/null || need+=(ceph-osd)
command -v rclone >/dev/null || need+=(rclone)
command -v restic >/dev/null || need+=(restic)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then echo "install-test-servers: need root to apt-get install ${need[*]}" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

FB=.cache/firebase
if [ ! -f "$FB/node_modules/firebase-tools/lib/emulator/storage/index.js" ]; then
  mkdir -p "$FB"
  [ -f "$FB/package.json" ] || echo '{"name":"dmctl-test-firebase","private":true}' > "$FB/package.json"
  npm install --prefix "$FB" --no-audit --no-fund --loglevel=error firebase-tools@15.34.2
fi
echo "install-test-servers: radosgw $(radosgw --version 2>/dev/null | awk '{print $3}'), rclone $(rclone version 2>/dev/null | head -1 | awk '{print $2}'), restic $(restic version | awk '{print $2}'), firebase-tools $(node -p "require('./$FB/node_modules/firebase-tools/package.json').version")"
