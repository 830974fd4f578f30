#!/usr/bin/env bash
# make bench: boots the guest and runs tools/memreg/bench/memreg-bench.c, printing
# its table. Every figure is a ratio against a baseline measured in the same
# guest run. The rows also go to build/bench/results.csv
# (metric,value,baseline,ratio,target), written only by a run that succeeded,
# and are drawn (scripts/bench-svg.py) in build/bench/results.svg.
# The serial log is kept in build/bench.log.
#
# The look-up rows hold up to 1M registrations in one context, one of them
# 1 GiB: the module is loaded with max_registrations=1048576 and the guest
# gets MEMREG_GUEST_MEM MiB of memory (default 8192 here).
set -euo pipefail
export MEMREG_VARIANT=bench
. "$(dirname "$0")/config.sh"
export MEMREG_GUEST_MEM=${MEMREG_GUEST_MEM:-8192}
modargs="max_registrations=1048576"

"$MEMREG_TOP/scripts/toolchain.sh"
"$MEMREG_TOP/scripts/build-kernel.sh"
"$MEMREG_TOP/scripts/build-module.sh"
"$MEMREG_TOP/scripts/build-guest.sh"
script=$MEMREG_BUILD/bench-run.sh
# MEMREG_BENCH_ARGS=lib runs only the rows of the user-space libraries,
# MEMREG_BENCH_ARGS=clients only those of the clients (UCX, libfabric);
# MEMREG_BENCH_ARGS="only ring,hit" only the sections named (see the
# program's main() for their names).
printf 'echo MEMREG-BENCH-BEGIN\nmemreg-bench %s\nrc=$?\necho MEMREG-BENCH-END\nexit $rc\n' \
	"${MEMREG_BENCH_ARGS:-}" >"$script"
log=$MEMREG_BUILD/bench.log
csv=$MEMREG_BUILD/bench/results.csv
mkdir -p "$(dirname "$csv")"
rm -f "$csv"
set +e
"$MEMREG_TOP/scripts/guest.sh" -q -l "$log" -a "$modargs" -k "kunit.enable=0 loglevel=3" \
	-t "${MEMREG_GUEST_TIMEOUT:-1200}" "$script" "$MEMREG_BUILD/guest-bin/memreg-bench" \
	"$MEMREG_BUILD/guest-bin/memreg-rs-ring_nop_bench" \
	"$MEMREG_BUILD/guest-bin/memreg-ucx-rcache" "$MEMREG_BUILD/guest-bin/memreg-ofi-mrcache"
rc=$?
set -e
# The program's output without its CSV lines: progress and the table.
sed -n '/^MEMREG-BENCH-BEGIN/,/^MEMREG-BENCH-END/p' "$log" | sed '1d;$d' |
	grep -v '^MEMREG-CSV ' || true
[ $rc = 0 ] || die "benchmark failed (status $rc); see $log"
bench_csv "$log" "$csv"
log "results: $csv, drawn in ${csv%.csv}.svg; serial log: $log"
