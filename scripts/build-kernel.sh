#!/usr/bin/env bash
# Builds the Rust-enabled kernel memreg runs on: tinyconfig plus
# scripts/kernel.config, with the rust/kernel/ overlay applied. Skipped when
# the kernel version, the fragment and the overlay are unchanged since the
# last successful build.
set -euo pipefail
. "$(dirname "$0")/config.sh"

if [ -n "${KDIR:-}" ]; then
	[ -f "$KDIR/Module.symvers" ] || die "KDIR=$KDIR is not a built kernel tree"
	exit 0
fi

"$MEMREG_TOP/scripts/fetch-kernel.sh"

fragment=$MEMREG_BUILD/kernel-$MEMREG_VARIANT$SERIES_TAG.config
mkdir -p "$MEMREG_BUILD"
# shellcheck disable=SC2086
cat $KERNEL_FRAGMENTS >"$fragment"
inputs=$( (echo "$KERNEL_SERIES $(ls "$MEMREG_BUILD"/apt/deb/ | grep "^${KERNEL_DEB_PKG}_")"; cat "$fragment" "$MEMREG_TOP/scripts/overlay.sh" "$MEMREG_TOP/scripts/build-kernel.sh" "$MEMREG_TOP/include/uapi/linux/memreg.h"; find "$MEMREG_TOP/rust/kernel" -type f | sort | xargs cat) | sha256sum | cut -d' ' -f1)
# Whether every line of the fragment is in the kernel's configuration.
config_has_fragment() {
	while IFS= read -r line; do
		case "$line" in CONFIG_*) grep -qxF "$line" "$KOBJ_DIR/.config" || return 1 ;; esac
	done <"$fragment"
}

stamp=$KOBJ_DIR/.memreg-inputs
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$inputs" ] && [ -f "$KOBJ_DIR/arch/x86/boot/bzImage" ] &&
	config_has_fragment; then
	exit 0
fi

"$MEMREG_TOP/scripts/overlay.sh" "$KSRC_DIR"
mkdir -p "$KOBJ_DIR"
# shellcheck disable=SC2046
kmake() { make -s -C "$KSRC_DIR" O="$KOBJ_DIR" $(kmake_args) "$@"; }

if ! [ -f "$KOBJ_DIR/.config" ] || ! cmp -s "$fragment" "$KOBJ_DIR/.memreg-fragment" ||
	! config_has_fragment; then
	log "configuring the $MEMREG_VARIANT kernel (tinyconfig + $(cd "$MEMREG_TOP" && echo $KERNEL_FRAGMENTS | sed "s|$MEMREG_TOP/||g"))"
	kmake rustavailable >/dev/null || die "the Rust toolchain is not usable for the kernel (make rustavailable)"
	kmake tinyconfig >/dev/null
	"$KSRC_DIR/scripts/kconfig/merge_config.sh" -m -O "$KOBJ_DIR" "$KOBJ_DIR/.config" \
		"$fragment" >/dev/null
	kmake olddefconfig >/dev/null
	# Every line of the fragment must have survived dependency resolution.
	while IFS= read -r line; do
		case "$line" in CONFIG_*) grep -qxF "$line" "$KOBJ_DIR/.config" ||
			die "kernel config lost '$line' (unmet dependency?)" ;; esac
	done <"$fragment"
	cp "$fragment" "$KOBJ_DIR/.memreg-fragment"
fi

log "building the $MEMREG_VARIANT kernel (a few minutes when cold)"
# The kernel's own Rust, the overlay included, goes through Clippy, so the
# overlay is held to the same lints as the module (undocumented_unsafe_blocks
# among them).
klog=$MEMREG_BUILD/kernel-$MEMREG_VARIANT$SERIES_TAG-build.log
kmake -j"$(nproc)" CLIPPY=1 bzImage modules >"$klog" 2>&1 || {
	tail -n 40 "$klog" >&2
	die "kernel build failed; full log in $klog"
}
# A warning in an overlay file fails the build (upstream files are not ours).
overlay_paths=$(cd "$MEMREG_TOP/rust/kernel" && find . -name '*.rs' | sed 's|^\./|rust/kernel/|')
warned=0
while read -r loc; do
	loc=${loc#"$KSRC_DIR"/}
	for p in $overlay_paths; do
		case $loc in "$p":*)
			grep -n -B1 -A8 -F -- "$KSRC_DIR/$loc" "$klog" >&2
			warned=1
			;;
		esac
	done
done < <(grep -A2 -E '^(warning|error)' "$klog" | sed -n 's/^ *--> *//p')
[ $warned = 0 ] || die "the overlay has compiler or Clippy warnings (full log in $klog)"
echo "$inputs" >"$stamp"
