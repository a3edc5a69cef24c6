#!/usr/bin/env bash
# Runs a small real fio job that writes what `ioacct produce --fio-lat-log` reads: a per-I/O
# latency log (write_lat_log, log_avg_msec=0, log_offset=1) and fio's JSON report.
#
#   deploy/run-fio.sh OUTDIR                 mixed random read/write on OUTDIR/mix.data
#   deploy/run-fio.sh OUTDIR trim TARGET     random trims on TARGET (a block device, or a
#                                            file where this fio can trim files)
#
# Then, for example:
#   ioacct produce --fio-lat-log OUTDIR/mix_lat.1.log --fio-json OUTDIR/mix.json \
#       --volume-id vol-fio --tenant-id tenant-fio
#   ioacct produce --fio-lat-log OUTDIR/trim_lat.1.log --volume-id vol-fio --tenant-id tenant-fio
# and compare `ioacct query counters vol-fio` with OUTDIR/*.json (docs/sources.md).
#
# Environment: FIO_IOS (I/Os per job, 2000), FIO_DIRECT (1: O_DIRECT, real device latency;
# 0 for file systems without O_DIRECT, e.g. tmpfs).
set -euo pipefail

command -v fio >/dev/null || {
  echo "fio is not installed: bash deploy/debian-packages.sh fio" >&2; exit 3; }
[[ $# -ge 1 ]] || { sed -n '2,9p' "$0" >&2; exit 2; }
out=$1 job=${2:-mixed}
mkdir -p "$out"
ios=${FIO_IOS:-2000}
# _lat log = total latency (what ioacct reads); lat_percentiles=1 puts lat_ns percentiles in
# the JSON report next to the clat_ns ones, so both sides of the check measure the same thing.
common=(--ioengine=psync --log_avg_msec=0 --log_offset=1 --lat_percentiles=1
        --output-format=json --number_ios="$ios")

case $job in
  mixed)
    # 4 MiB region, sizes 4k/8k/64k: ~2000 I/Os of ~15 MB in a second or two
    exec fio --name=mix --filename="$out/mix.data" --size=4M --io_size=256M \
      --rw=randrw --rwmixread=60 --bssplit=4k/80:8k/15:64k/5 --direct="${FIO_DIRECT:-1}" \
      --write_lat_log="$out/mix" "${common[@]}" --output="$out/mix.json" ;;
  trim)
    [[ $# -eq 3 ]] || { echo "usage: $0 OUTDIR trim TARGET" >&2; exit 2; }
    # log_unix_epoch=1: the log's times are Unix ms, so no --fio-json is needed
    exec fio --name=trim --filename="$3" --size=8M --io_size=1G --rw=randtrim --bs=64k \
      --log_unix_epoch=1 --write_lat_log="$out/trim" "${common[@]}" --output="$out/trim.json" ;;
  *) echo "unknown job: $job (mixed, trim)" >&2; exit 2 ;;
esac
