#!/usr/bin/env bash
# Builds the guest's user programs (kselftests, benchmarks, demo) as static
# binaries into build/guest-bin.
set -euo pipefail
. "$(dirname "$0")/config.sh"

out=$MEMREG_BUILD/guest-bin
mkdir -p "$out"
cflags=(-static -O2 -g0 -Wall -Werror -D_GNU_SOURCE -pthread
	-I "$MEMREG_TOP/include/uapi" -I "$KSRC_DIR/tools/testing/selftests")
for src in "$MEMREG_TOP"/tests/guest/*.c "$MEMREG_TOP"/tests/*.c; do
	[ -e "$src" ] || continue
	bin=$out/$(basename "$src" .c)
	fresh=1
	for dep in "$src" "$MEMREG_TOP/include/uapi/linux/memreg.h" "$MEMREG_TOP"/tests/*.h; do
		[ "$bin" -nt "$dep" ] || fresh=0
	done
	[ "$fresh" = 1 ] && continue
	gcc "${cflags[@]}" -o "$bin" "$src" -lm || die "cannot compile $src"
done
