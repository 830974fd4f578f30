#!/usr/bin/env bash
# make bench: boots the guest and runs tests/guest/memreg-bench.c, printing
# its table. Every figure is a ratio against a baseline measured in the same
# guest run. The serial log is kept in build/bench.log.
set -euo pipefail
export MEMREG_VARIANT=bench
. "$(dirname "$0")/config.sh"
"$MEMREG_TOP/scripts/toolchain.sh"
"$MEMREG_TOP/scripts/build-kernel.sh"
"$MEMREG_TOP/scripts/build-module.sh"
"$MEMREG_TOP/scripts/build-guest.sh"
script=$MEMREG_BUILD/bench-run.sh
printf 'echo MEMREG-BENCH-BEGIN\nmemreg-bench\nrc=$?\necho MEMREG-BENCH-END\nexit $rc\n' >"$script"
log=$MEMREG_BUILD/bench.log
set +e
"$MEMREG_TOP/scripts/guest.sh" -q -l "$log" -k "kunit.enable=0 loglevel=3" -t "${MEMREG_GUEST_TIMEOUT:-1200}" \
	"$script" "$MEMREG_BUILD/guest-bin/memreg-bench"
rc=$?
set -e
sed -n '/^MEMREG-BENCH-BEGIN/,/^MEMREG-BENCH-END/p' "$log" | sed '1d;$d'
[ $rc = 0 ] || die "benchmark failed (status $rc); see $log"
