#!/usr/bin/env bash
# make run: boots the guest with memreg loaded and runs CMD (a shell command
# line; default: the demo). EXTRA files are copied into the guest's /bin.
#
# Only CMD's output is shown, as it comes: the kernel boots with
# "quiet loglevel=3" (errors still show), and the lines the guest prints
# between the markers around CMD are passed through. The whole serial log is
# kept in build/guest.log; its path is printed when something fails.
# MEMREG_KERNEL_ARGS and MEMREG_MODULE_ARGS add kernel and module arguments.
set -euo pipefail
. "$(dirname "$0")/config.sh"
cmd=${1:-memreg-demo}
shift || true
script=$MEMREG_BUILD/run-cmd.sh
{
	echo 'echo MEMREG-RUN-BEGIN'
	printf '%s\n' "$cmd"
	echo 'rc=$?'
	echo 'echo "MEMREG-RUN-END $rc"'
	echo 'exit $rc'
} >"$script"
progs=("$MEMREG_BUILD"/guest-bin/*)
log=$MEMREG_BUILD/guest.log
set +e
"$MEMREG_TOP/scripts/guest.sh" -l "$log" -a "${MEMREG_MODULE_ARGS:-}" \
	-k "kunit.enable=0 quiet loglevel=3 ${MEMREG_KERNEL_ARGS:-}" \
	-t "${MEMREG_GUEST_TIMEOUT:-600}" "$script" "${progs[@]}" "$@" |
	awk '/^MEMREG-RUN-END/ { on = 0 } on { print; fflush() } /^MEMREG-RUN-BEGIN/ { on = 1 }'
status=${PIPESTATUS[0]}
set -e
if [ "$status" != 0 ]; then
	case $status in
	1) what="the command or the module's load/unload failed" ;;
	124) what="the guest hung and was killed" ;;
	*) what="the guest panicked or stopped without reporting" ;;
	esac
	grep -E '^MEMREG-(GUEST: (insmod|rmmod) failed|RUN-END [^0]|HOST:)' "$log" |
		sed -e 's/^MEMREG-RUN-END \(.*\)/the command exited with status \1/' -e 's/^/  /' >&2 || true
	echo "[memreg] make run: $what (status $status); full serial log: $log" >&2
fi
exit "$status"
