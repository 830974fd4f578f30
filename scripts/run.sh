#!/usr/bin/env bash
# make run: boots the guest with memreg loaded and runs CMD (a shell command
# line; default: the demo) with the serial console on standard output. EXTRA
# files are copied into the guest's /bin.
set -euo pipefail
. "$(dirname "$0")/config.sh"
cmd=${1:-memreg-demo}
shift || true
script=$MEMREG_BUILD/run-cmd.sh
printf '%s\n' "$cmd" >"$script"
progs=("$MEMREG_BUILD"/guest-bin/*)
"$MEMREG_TOP/scripts/guest.sh" -k "kunit.enable=0 ${MEMREG_KERNEL_ARGS:-}" -t "${MEMREG_GUEST_TIMEOUT:-600}" "$script" "${progs[@]}" "$@"
