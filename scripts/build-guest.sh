#!/usr/bin/env bash
# Builds the guest's user programs as static binaries into build/guest-bin:
# the kselftests (tools/testing/selftests/memreg, through the kernel's own
# lib.mk: the directory is copied into the kernel tree and built there), the
# demo (samples/memreg), the benchmark (tools/memreg/bench), the clients
# (tools/memreg/clients) and the guest's helpers (scripts/guest).
set -euo pipefail
. "$(dirname "$0")/config.sh"

out=$MEMREG_BUILD/guest-bin
mkdir -p "$out"
uapi=$MEMREG_TOP/include/uapi
selftests=$MEMREG_TOP/tools/testing/selftests/memreg

# The kselftests, as the kernel builds them, with libmemreg
# (tools/lib/memreg) beside them in the kernel tree.
intree=$KSRC_DIR/tools/testing/selftests/memreg
libdir=$KSRC_DIR/tools/lib/memreg
mkdir -p "$intree" "$libdir"
rsync -a --delete --exclude .gitignore "$selftests/" "$intree/"
rsync -a --delete --exclude build "$MEMREG_TOP/tools/lib/memreg/" "$libdir/"
CFLAGS="-g0" LDFLAGS="-static" make -s -C "$intree" OUTPUT="$out" \
	KHDR_INCLUDES="-isystem $uapi" LIBMEMREG_UAPI_DIR="$uapi" \
	LIBMEMREG_OUT="$MEMREG_BUILD/libmemreg-guest/" all >&2 ||
	die "cannot build the kselftests"
libmemreg=$MEMREG_BUILD/libmemreg-guest/libmemreg.a

# The other programs.
cflags=(-static -O2 -g0 -Wall -Werror -D_GNU_SOURCE -pthread
	-isystem "$uapi" -I "$libdir/include" -I "$intree" -I "$KSRC_DIR")
for src in "$MEMREG_TOP"/scripts/guest/*.c "$MEMREG_TOP"/samples/memreg/*.c \
	"$MEMREG_TOP"/tools/memreg/bench/*.c; do
	[ -e "$src" ] || continue
	bin=$out/$(basename "$src" .c)
	fresh=1
	for dep in "$src" "$uapi/linux/memreg.h" "$selftests"/*.h "$libmemreg"; do
		[ "$bin" -nt "$dep" ] || fresh=0
	done
	[ "$fresh" = 1 ] && continue
	gcc "${cflags[@]}" -o "$bin" "$src" "$libmemreg" -lm || die "cannot compile $src"
done

# The clients (tools/memreg/clients): UCX's and libfabric's registration
# caches with memreg as their memory monitor, static, over Debian's archives.
# glibc's warnings about name lookups in static programs are expected: the
# clients use numeric addresses only.
if ! make -s -C "$MEMREG_TOP/tools/memreg/clients" OUTPUT="$out/" UAPI_DIR="$uapi" \
	LIBMEMREG_A="$libmemreg" LIBMEMREG_INC="$libdir/include" >"$out/.clients.log" 2>&1; then
	cat "$out/.clients.log" >&2
	die "cannot build the clients"
fi

# The Rust crates' guest test (memreg_rust_test) and examples (memreg-rs-*).
"$MEMREG_TOP/scripts/build-rust.sh" guest "$out" >&2 || die "cannot build the Rust crates"
