#!/usr/bin/env bash
# Renders ioacct's systemd units for this checkout and installs them (docs/operations.md).
#   deploy/systemd/install.sh [UNIT_DIR] [CONF_DIR]
# UNIT_DIR: where the units go (default /etc/systemd/system); CONF_DIR: where they read
# their environment files (default /etc/ioacct). The units run the checkout's .venv
# (`make install`) as user ioacct; create it with `useradd --system ioacct`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
prefix="$(cd "$here/../.." && pwd)"
unit_dir="${1:-/etc/systemd/system}"
conf_dir="${2:-/etc/ioacct}"
mkdir -p "$unit_dir"
for unit in "$here"/*.service; do
  sed -e "s|@PREFIX@|$prefix|g" -e "s|@CONFDIR@|$conf_dir|g" "$unit" \
    > "$unit_dir/$(basename "$unit")"
done
if [[ ! -e "$conf_dir/ioacct.env" ]]; then
  mkdir -p "$conf_dir"
  install -m 0640 "$here/ioacct.env.example" "$conf_dir/ioacct.env"
  echo "wrote $conf_dir/ioacct.env from the example: set the cluster and the principal"
fi
echo "installed into $unit_dir: $(cd "$here" && ls ./*.service | xargs -n1 basename | tr '\n' ' ')"
echo "then: systemctl daemon-reload && systemctl enable --now ioacct-worker"
