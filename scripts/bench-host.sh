#!/usr/bin/env bash
# make bench-host: the benchmark on this machine instead of the guest, for
# users who want figures from their own hardware. memreg.ko must already be
# loaded here (on a kernel with the rust/kernel overlay: the project's bench
# kernel, or one prepared with scripts/overlay.sh), with
# max_registrations=1048576 for the look-up rows. Runs as root.
#
# It builds the same static programs the guest runs (build/guest-bin) and
# runs "memreg-bench host": every row but the clients' (they would set up
# soft-iWARP on a dummy device of this machine), the REGISTER miss rows only
# when the kernel has CONFIG_GUP_TEST and debugfs is mounted. The table is
# printed; the rows go to build/bench/host-results.csv and are drawn in
# build/bench/host-results.svg.
set -euo pipefail
. "$(dirname "$0")/config.sh"

[ "$(id -u)" = 0 ] || die "the benchmark pins memory and reads debugfs: run it as root"
[ -c /dev/memreg ] ||
	die "/dev/memreg is missing: load memreg.ko on this machine first (tools/memreg/bench/README)"

"$MEMREG_TOP/scripts/toolchain.sh"
"$MEMREG_TOP/scripts/build-kernel.sh"
"$MEMREG_TOP/scripts/build-guest.sh"

csv=$MEMREG_BUILD/bench/host-results.csv
out=$MEMREG_BUILD/bench/host-bench.log
mkdir -p "$(dirname "$csv")"
rm -f "$csv"
set +e
"$MEMREG_BUILD/guest-bin/memreg-bench" host >"$out" 2>&1
rc=$?
set -e
grep -v '^MEMREG-CSV ' "$out" || true
[ $rc = 0 ] || die "benchmark failed (status $rc); see $out"
bench_csv "$out" "$csv"
log "results: $csv, drawn in ${csv%.csv}.svg; output: $out"
