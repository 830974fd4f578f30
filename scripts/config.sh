# Shared settings for memreg's scripts. Sourced, not run.
# shellcheck shell=bash

# Root of the checkout.
MEMREG_TOP=${MEMREG_TOP:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
# Git-ignored directory holding every downloaded or built artefact.
MEMREG_BUILD=${MEMREG_BUILD:-$MEMREG_TOP/build}

# The kernel we build against: Debian's linux-source package of this version
# (`make check KERNEL_SERIES=7.2` builds and tests against the previous
# series, in build directories of its own).
KERNEL_SERIES=${KERNEL_SERIES:-7.3}
if [ "$KERNEL_SERIES" = 7.3 ]; then
	SERIES_TAG=
else
	SERIES_TAG=-$KERNEL_SERIES
fi
KERNEL_DEB_SUITE=trixie-backports
KERNEL_DEB_PKG=linux-source-$KERNEL_SERIES

# Pinned kernel Rust toolchain (Debian bookworm).
RUSTC_WEB_VERSION=1.85.0+dfsg3-1~deb12u3
LLVM_VERSION=19
BINDGEN_VERSION=0.71.1

TOOLS_DIR=$MEMREG_BUILD/tools
BINDGEN=$TOOLS_DIR/bin/bindgen
KSRC_DIR=$MEMREG_BUILD/linux-$KERNEL_SERIES

# Two kernels are built from the same source: "check" with the debugging
# options make check relies on (lockdep, DEBUG_VM, ...), "bench" without them,
# for figures that are not dominated by debugging overhead.
MEMREG_VARIANT=${MEMREG_VARIANT:-check}
case $MEMREG_VARIANT in
check)
	KOBJ_DIR=$MEMREG_BUILD/kernel$SERIES_TAG
	KERNEL_FRAGMENTS="$MEMREG_TOP/scripts/kernel.config $MEMREG_TOP/scripts/kernel-debug.config"
	;;
bench)
	KOBJ_DIR=$MEMREG_BUILD/kernel-bench$SERIES_TAG
	KERNEL_FRAGMENTS="$MEMREG_TOP/scripts/kernel.config $MEMREG_TOP/scripts/kernel-bench.config"
	;;
*)
	echo "[memreg] error: MEMREG_VARIANT must be check or bench" >&2
	exit 1
	;;
esac
# The kernel modules are built against, and where the module's objects go.
MODULE_KDIR=${KDIR:-$KOBJ_DIR}
MODULE_DIR=$MEMREG_BUILD/module-$MEMREG_VARIANT$SERIES_TAG
# MEMREG_FAULT=drop-events builds a broken module on purpose (every event is
# lost), in a directory of its own, to show that the tests catch it.
MEMREG_FAULT=${MEMREG_FAULT:-}
case $MEMREG_FAULT in
'') ;;
drop-events) MODULE_DIR=$MODULE_DIR-fault-$MEMREG_FAULT ;;
*)
	echo "[memreg] error: MEMREG_FAULT must be empty or drop-events" >&2
	exit 1
	;;
esac
export MEMREG_FAULT
MODULE_KO=$MODULE_DIR/rust/memreg.ko

# Arguments every kernel make invocation needs.
kmake_args() {
	echo "LLVM=-$LLVM_VERSION RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc BINDGEN=$BINDGEN CLIPPY_DRIVER=/usr/bin/clippy-driver RUSTFMT=/usr/bin/rustfmt"
}

log() { printf '[memreg] %s\n' "$*" >&2; }
die() { printf '[memreg] error: %s\n' "$*" >&2; exit 1; }

# Draws a results CSV (metric,value,baseline,ratio,target) as the same name
# with .svg; a drawing that fails only warns, the CSV is the record.
bench_svg() { # CSV
	python3 "$MEMREG_TOP/scripts/bench-svg.py" "$1" "${1%.csv}.svg" ||
		log "warning: could not draw ${1%.csv}.svg"
}

# Writes the "MEMREG-CSV " lines memreg-bench printed to LOG into CSV, with
# its header, and draws it; fails when there are none.
bench_csv() { # LOG CSV
	local rows
	rows=$(sed -n 's/^MEMREG-CSV //p' "$1" | grep -v '^metric,' || true)
	[ -n "$rows" ] || die "the benchmark printed no results; see $1"
	{
		echo "metric,value,baseline,ratio,target"
		printf '%s\n' "$rows"
	} >"$2"
	bench_svg "$2"
}
