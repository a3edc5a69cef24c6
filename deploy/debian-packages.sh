#!/usr/bin/env bash
# Installs the Debian packages that some tests and optional sources need, only those missing.
#   bash deploy/debian-packages.sh [GROUP ...]      groups: test (all that `make test` needs),
#                                                    fio, blktrace, browser, qemu, systemd,
#                                                    prometheus
# Needs root (CI and these machines run as root) or passwordless sudo; says so otherwise.
set -euo pipefail

declare -A GROUPS_=(
  [fio]="fio"
  [blktrace]="blktrace"
  [browser]="chromium"
  [qemu]="qemu-system-x86 busybox-static cpio"
  [systemd]="systemd"  # systemd-analyze verify checks deploy/systemd's units
  [prometheus]="prometheus"  # promtool checks deploy/prometheus; the server scrapes workers
)
GROUPS_[test]="${GROUPS_[fio]} ${GROUPS_[blktrace]} ${GROUPS_[browser]} ${GROUPS_[qemu]} ${GROUPS_[systemd]} ${GROUPS_[prometheus]}"

wanted=()
for group in "${@:-test}"; do
  [[ -n "${GROUPS_[$group]:-}" ]] || { echo "unknown group: $group (${!GROUPS_[*]})" >&2; exit 2; }
  for pkg in ${GROUPS_[$group]}; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || wanted+=("$pkg")
  done
done
((${#wanted[@]} == 0)) && exit 0

if [[ $(id -u) -eq 0 ]]; then sudo=(); elif sudo -n true 2>/dev/null; then sudo=(sudo -n); else
  echo "missing Debian packages: ${wanted[*]}; install them as root:" >&2
  echo "  apt-get update && apt-get install -y --no-install-recommends ${wanted[*]}" >&2
  exit 1
fi
echo "installing Debian packages: ${wanted[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${wanted[@]}" >/dev/null
