# Shared settings for memreg's scripts. Sourced, not run.
# shellcheck shell=bash

# Root of the checkout.
MEMREG_TOP=${MEMREG_TOP:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
# Git-ignored directory holding every downloaded or built artefact.
MEMREG_BUILD=${MEMREG_BUILD:-$MEMREG_TOP/build}

# The kernel we build against: Debian's linux-source package of this version.
KERNEL_SERIES=7.3
KERNEL_DEB_SUITE=trixie-backports
KERNEL_DEB_PKG=linux-source-$KERNEL_SERIES

# Pinned kernel Rust toolchain (Debian bookworm).
RUSTC_WEB_VERSION=1.85.0+dfsg3-1~deb12u3
LLVM_VERSION=19
BINDGEN_VERSION=0.71.1

TOOLS_DIR=$MEMREG_BUILD/tools
BINDGEN=$TOOLS_DIR/bin/bindgen
KSRC_DIR=$MEMREG_BUILD/linux-$KERNEL_SERIES
KOBJ_DIR=$MEMREG_BUILD/kernel

# Arguments every kernel make invocation needs.
kmake_args() {
	echo "LLVM=-$LLVM_VERSION RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc BINDGEN=$BINDGEN CLIPPY_DRIVER=/usr/bin/clippy-driver RUSTFMT=/usr/bin/rustfmt"
}

log() { printf '[memreg] %s\n' "$*" >&2; }
die() { printf '[memreg] error: %s\n' "$*" >&2; exit 1; }
