#!/usr/bin/env bash
# Builds memreg.ko against the project's kernel (or KDIR) with CLIPPY=1 and
# fails on any compiler or Clippy warning. Always recompiles the module (a few
# seconds) so that warnings are seen on every run.
set -euo pipefail
. "$(dirname "$0")/config.sh"

kdir=${KDIR:-$KOBJ_DIR}
log=$MEMREG_BUILD/module-build.log
rm -f "$MEMREG_TOP"/rust/memreg.o "$MEMREG_TOP"/rust/memreg.ko
# shellcheck disable=SC2046
if ! make -C "$kdir" M="$MEMREG_TOP" $(kmake_args) CLIPPY=1 modules >"$log" 2>&1; then
	cat "$log" >&2
	die "module build failed"
fi
if grep -E -i '(^|[^a-z_])(warning|error)(\[|:)' "$log" >&2; then
	die "module build has warnings (full log in $log)"
fi
