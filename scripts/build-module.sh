#!/usr/bin/env bash
# Builds memreg.ko against the project's kernel (or KDIR) with CLIPPY=1 and
# fails on any compiler or Clippy warning. Always recompiles the module (a few
# seconds) so that warnings are seen on every run.
set -euo pipefail
. "$(dirname "$0")/config.sh"

log=$MODULE_DIR-build.log
mkdir -p "$MODULE_DIR"
rm -f "$MODULE_DIR"/rust/memreg.o "$MODULE_KO"
# shellcheck disable=SC2046
if ! make -C "$MODULE_KDIR" M="$MEMREG_TOP" MO="$MODULE_DIR" $(kmake_args) CLIPPY=1 modules >"$log" 2>&1; then
	cat "$log" >&2
	die "module build failed"
fi
if grep -E -i '(^|[^a-z_])(warning|error)(\[|:)' "$log" >&2; then
	die "module build has warnings (full log in $log)"
fi
