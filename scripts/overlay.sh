#!/usr/bin/env bash
# Applies the kernel-crate overlay (rust/kernel/ of this project) to a kernel
# tree: new Rust modules of the `kernel` crate, their C helpers, the headers
# bindgen must see, and the Kconfig symbol that selects MMU notifiers.
# Idempotent: files are only rewritten when their content changes, so the
# kernel's make rebuilds only what the overlay touched.
set -euo pipefail
. "$(dirname "$0")/config.sh"

ksrc=$(cd "${1:?usage: overlay.sh KERNEL_SOURCE_DIR}" && pwd)
ov=$MEMREG_TOP/rust/kernel

# What this run installs, one entry per line: "file PATH" for a file copied
# in, "line PATH<TAB>TEXT" for a line inserted into a kernel file. Entries of
# the previous run that are gone (an overlay file deleted or renamed) are
# undone at the end, so a warm tree never keeps what a fresh one would lack.
manifest=$ksrc/.memreg-overlay-manifest
new_manifest=$(mktemp)
trap 'rm -f "$new_manifest"' EXIT

# Copy a file only when its content differs.
put() {
	printf 'file %s\n' "$2" >>"$new_manifest"
	if ! cmp -s "$1" "$2"; then
		cp "$1" "$2"
	fi
}

# Insert line $2 into file $1 once, after (or with $4 = before, before) the
# first line matching $3.
insert_line() {
	printf 'line %s\t%s\n' "$1" "$2" >>"$new_manifest"
	grep -qxF "$2" "$1" && return 0
	local tmp
	tmp=$(mktemp)
	awk -v line="$2" -v pat="$3" -v before="${4:-}" '
		!done && $0 ~ pat && before { print line; done = 1 }
		{ print }
		!done && $0 ~ pat { print line; done = 1 }' "$1" >"$tmp"
	grep -qxF "$2" "$tmp" || die "overlay: cannot find /$3/ in $1"
	mv "$tmp" "$1"
}

# Top-level Rust modules of the kernel crate.
for f in "$ov"/*.rs; do
	[ -e "$f" ] || continue
	put "$f" "$ksrc/rust/kernel/$(basename "$f")"
	mod=$(basename "$f" .rs)
	insert_line "$ksrc/rust/kernel/lib.rs" "pub mod $mod;" '^pub mod mm;$'
done

# Rust modules nested in an existing module of the kernel crate: DIR/x.rs
# becomes `pub mod x;` of rust/kernel/DIR.rs, declared before its first `use`.
for f in "$ov"/*/*.rs; do
	[ -e "$f" ] || continue
	dir=$(basename "$(dirname "$f")")
	[ -f "$ksrc/rust/kernel/$dir.rs" ] || die "overlay: rust/kernel/$dir.rs does not exist for $f"
	mkdir -p "$ksrc/rust/kernel/$dir"
	put "$f" "$ksrc/rust/kernel/$dir/$(basename "$f")"
	insert_line "$ksrc/rust/kernel/$dir.rs" "pub mod $(basename "$f" .rs);" '^use ' before
done

# C helpers for inline functions and macros bindgen cannot see.
for f in "$ov"/helpers/*.c; do
	[ -e "$f" ] || continue
	put "$f" "$ksrc/rust/helpers/$(basename "$f")"
	insert_line "$ksrc/rust/helpers/helpers.c" "#include \"$(basename "$f")\"" '^#include "mm.c"$'
done

# Headers for bindgen.
while read -r hdr; do
	[ -n "$hdr" ] || continue
	insert_line "$ksrc/rust/bindings/bindings_helper.h" "#include <$hdr>" '^#include <linux/mm.h>$'
done <"$ov/bindings_headers"

# memreg's user ABI header, for the kernel's uapi crate (bindgen): the driver
# uses the generated structures and constants instead of copies of its own.
put "$MEMREG_TOP/include/uapi/linux/memreg.h" "$ksrc/include/uapi/linux/memreg.h"
insert_line "$ksrc/rust/uapi/uapi_helper.h" "#include <uapi/linux/memreg.h>" '^#include <uapi/linux/ioctl.h>$'

# Kconfig symbol selecting what the abstractions need; in a 7.2 tree also
# MEMREG_COMPAT_7_2, under which the overlay provides what 7.2's kernel crate
# lacks (rust/kernel/error/compat.rs, sync/full_barrier.rs, sync/poll_box.rs).
kconfig=$(mktemp)
cat "$ov/Kconfig" >"$kconfig"
series=$(sed -n 's/^VERSION = //p' "$ksrc/Makefile").$(sed -n 's/^PATCHLEVEL = //p' "$ksrc/Makefile")
if [ "$series" = 7.2 ]; then
	cat >>"$kconfig" <<'KCONFIG'

config MEMREG_COMPAT_7_2
	def_bool y
	depends on MEMREG_SUPPORT
	help
	  Set by memreg's overlay in a 7.2 tree: the overlay then provides
	  what 7.2's kernel crate lacks and later kernels have.
KCONFIG
fi
put "$kconfig" "$ksrc/rust/Kconfig.memreg"
rm -f "$kconfig"
insert_line "$ksrc/mm/Kconfig" 'source "rust/Kconfig.memreg"' '^menu "Memory Management options"$'

# Undo what the previous run installed and this one did not.
if [ -f "$manifest" ]; then
	sort -u "$new_manifest" -o "$new_manifest"
	sort -u "$manifest" | comm -23 - "$new_manifest" | while IFS= read -r entry; do
		case $entry in
		"file "*)
			rm -f "${entry#file }"
			;;
		"line "*)
			rest=${entry#line }
			target=${rest%%$'\t'*}
			text=${rest#*$'\t'}
			if [ -f "$target" ] && grep -qxF "$text" "$target"; then
				tmp=$(mktemp)
				grep -vxF "$text" "$target" >"$tmp" || true
				cat "$tmp" >"$target"
				rm -f "$tmp"
			fi
			;;
		esac
	done
fi
cp "$new_manifest" "$manifest"
