#!/usr/bin/env bash
# Boots the QEMU guest with memreg.ko and runs a shell script inside it.
#
#   guest.sh [-l LOG] [-t SECONDS] [-a "MODULE ARGS"] [-k "KERNEL ARGS"] [-n NAME]
#            [-x "QEMU ARGS"] [-q] SCRIPT [FILE...]
#
# -n names the guest's initramfs (build/NAME, build/NAME.cpio; default
# initramfs), so that two guests can run at once; -x adds QEMU arguments
# (a network device, say).
#
# SCRIPT runs as /run.sh in /tmp of the guest; each FILE is copied into the
# guest's /bin. The serial console is written to LOG (default
# build/guest.log) and, without -q, also to standard output. Exits with the
# guest's status: 0 when SCRIPT and the module unload succeeded, 1 when they
# did not, 2 when the guest panicked or stopped without reporting, 124 when it
# hung past SECONDS (default 600) and was killed.
set -euo pipefail
. "$(dirname "$0")/config.sh"

logf=$MEMREG_BUILD/guest.log
timeout_s=600
modargs=
kargs=
quiet=0
name=initramfs
qemu_args=
while getopts "l:t:a:k:n:x:q" o; do
	case $o in
	l) logf=$OPTARG ;;
	t) timeout_s=$OPTARG ;;
	a) modargs=$OPTARG ;;
	k) kargs=$OPTARG ;;
	n) name=$OPTARG ;;
	x) qemu_args=$OPTARG ;;
	q) quiet=1 ;;
	*) die "usage: guest.sh [-l LOG] [-t SECONDS] [-a ARGS] [-k ARGS] [-n NAME] [-x ARGS] [-q] SCRIPT [FILE...]" ;;
	esac
done
shift $((OPTIND - 1))
script=${1:?SCRIPT missing}
shift

root=$MEMREG_BUILD/$name
rm -rf "$root"
mkdir -p "$root"/{bin,proc,sys,dev,tmp}
cp /bin/busybox "$root/bin/busybox"
cp "$MEMREG_TOP/scripts/guest/init" "$root/init"
chmod +x "$root/init"
cp "$MODULE_KO" "$root/memreg.ko"
cp "$MEMREG_BUILD/guest-bin/guest-exit" "$root/bin/"
cp "$script" "$root/run.sh"
for f in "$@"; do
	cp "$f" "$root/bin/"
done
initrd=$MEMREG_BUILD/$name.cpio
(cd "$root" && find . | cpio -o -H newc --quiet) >"$initrd"

mkdir -p "$(dirname "$logf")"
set +e
timeout -k 10 "$timeout_s" qemu-system-x86_64 -accel tcg,thread=multi -cpu "${MEMREG_QEMU_CPU:-max}" -m "${MEMREG_GUEST_MEM:-1024}" -smp 2 \
	-nographic -no-reboot -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
	-kernel "$MODULE_KDIR/arch/x86/boot/bzImage" -initrd "$initrd" \
	-append "console=ttyS0 panic=-1 oops=panic transparent_hugepage=always MEMREG_MODULE_ARGS=\"$modargs\" $kargs" \
	$qemu_args </dev/null 2>&1 | tr -d '\r' | if [ $quiet = 1 ]; then cat >"$logf"; else tee "$logf"; fi
status=${PIPESTATUS[0]}
set -e

if [ "$status" = 124 ] || [ "$status" = 137 ]; then
	echo "MEMREG-HOST: guest hung for ${timeout_s}s and was killed" >>"$logf"
	exit 124
fi
if [ $((status % 2)) = 1 ]; then
	exit $(((status - 1) / 2 != 0))
fi
echo "MEMREG-HOST: guest stopped without reporting (status $status)" >>"$logf"
exit 2
