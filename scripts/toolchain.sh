#!/usr/bin/env bash
# Installs everything memreg needs to build a Rust-enabled kernel, the module
# and the guest. Idempotent and quiet when everything is already in place.
set -euo pipefail
. "$(dirname "$0")/config.sh"

PACKAGES=(
	"rustc-web=$RUSTC_WEB_VERSION"
	"rust-web-src=$RUSTC_WEB_VERSION"
	"libstd-rust-web-dev=$RUSTC_WEB_VERSION"
	"libstd-rust-web-1.85=$RUSTC_WEB_VERSION"
	"rust-web-clippy=$RUSTC_WEB_VERSION"
	"rustfmt-web=$RUSTC_WEB_VERSION"
	"clang-$LLVM_VERSION" "lld-$LLVM_VERSION" "llvm-$LLVM_VERSION"
	"libclang-$LLVM_VERSION-dev"
	flex bison bc libelf-dev libssl-dev cpio busybox-static
	qemu-system-x86 make gcc xz-utils rsync python3
	pkg-config groff-base man-db file
	# The clients memreg runs under (UCX's registration cache, libfabric's
	# MR cache over verbs and soft-iWARP), linked statically into guest
	# programs, and what their static archives need.
	libucx-dev libfabric-dev libibverbs-dev librdmacm-dev ibverbs-providers
	libnl-3-dev libnl-route-3-dev libnuma-dev libpsm2-dev
)

missing=()
for p in "${PACKAGES[@]}"; do
	name=${p%%=*}
	want=${p#*=}
	have=$(dpkg-query -W -f='${Status} ${Version}' "$name" 2>/dev/null || true)
	case "$have" in
	"install ok installed "*)
		if [ "$name" != "$p" ] && [ "${have##* }" != "$want" ]; then
			missing+=("$p")
		fi ;;
	*) missing+=("$p") ;;
	esac
done

if [ ${#missing[@]} -gt 0 ]; then
	[ "$(id -u)" = 0 ] || die "missing packages (run as root or install them): ${missing[*]}"
	mkdir -p "$MEMREG_BUILD"
	log "installing Debian packages: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null
	# One transaction: the pinned rustc-web packages depend on each other at
	# exactly the same version.
	if ! apt-get install -y -qq --no-install-recommends --allow-downgrades \
		"${missing[@]}" >"$MEMREG_BUILD/apt-install.log" 2>&1; then
		for p in "${missing[@]}"; do
			apt-cache show "$p" >/dev/null 2>&1 ||
				die "Debian package '$p' is not in the configured archives"
		done
		die "apt-get install failed; see $MEMREG_BUILD/apt-install.log"
	fi
fi

if ! [ -x "$BINDGEN" ] || ! "$BINDGEN" --version 2>/dev/null | grep -q " $BINDGEN_VERSION\$"; then
	command -v cargo >/dev/null || die "cargo is needed to build bindgen-cli $BINDGEN_VERSION"
	log "building bindgen-cli $BINDGEN_VERSION into $TOOLS_DIR"
	mkdir -p "$TOOLS_DIR"
	cargo install -q bindgen-cli --version "$BINDGEN_VERSION" --locked --root "$TOOLS_DIR" ||
		die "cargo install bindgen-cli $BINDGEN_VERSION failed"
fi
