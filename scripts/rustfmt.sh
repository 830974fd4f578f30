#!/usr/bin/env bash
# Runs rustfmt with the kernel's configuration over the module and the
# overlay. Pass --check to only report.
set -euo pipefail
. "$(dirname "$0")/config.sh"
"$MEMREG_TOP/scripts/fetch-kernel.sh"
mapfile -t files < <(find "$MEMREG_TOP/rust" -name '*.rs' | sort)
/usr/bin/rustfmt --edition 2021 --config-path "$KSRC_DIR/.rustfmt.toml" "$@" "${files[@]}"
