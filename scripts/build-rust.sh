#!/usr/bin/env bash
# Builds and checks the Rust user-space crates in tools/lib/rust (memreg-sys
# and memreg).
#
#   build-rust.sh host-check     cargo fmt --check, clippy (-D warnings) and
#                                cargo test on the host (the tests that need
#                                /dev/memreg skip there)
#   build-rust.sh guest OUTDIR   static release binaries for the guest:
#                                OUTDIR/memreg_rust_test (tests/guest.rs, KTAP)
#                                and OUTDIR/memreg-rs-<example> for each example
#
# The target directory is $MEMREG_BUILD/rust-target, outside the source tree.
set -euo pipefail
. "$(dirname "$0")/config.sh"

crates=$MEMREG_TOP/tools/lib/rust
export CARGO_TARGET_DIR=$MEMREG_BUILD/rust-target
# rustup's cargo, unless one is on PATH already.
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
	PATH=$HOME/.cargo/bin:$PATH
fi
command -v cargo >/dev/null 2>&1 || die "no cargo on PATH"

examples="register_copy ring_copy pool peer_write ring_nop_bench"
target=x86_64-unknown-linux-gnu

host_check() {
	cd "$crates"
	log "cargo fmt --check"
	cargo fmt --all --check
	log "cargo clippy"
	cargo clippy --workspace --all-targets --locked -- -D warnings
	log "cargo test"
	cargo test --workspace --locked
}

guest() {
	local out=$1 json bin ex f
	mkdir -p "$out"
	cd "$crates"
	# Not PIE, so that file(1) and the guest see a plain static executable.
	export RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static"
	log "building the guest test and examples (static, $target)"
	cargo build -p memreg --examples --release --locked --target "$target"
	json=$(cargo test -p memreg --test guest --no-run --release --locked \
		--target "$target" --message-format=json)
	bin=$(printf '%s\n' "$json" | python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") \
            and m["target"]["name"] == "guest":
        print(m["executable"])
')
	[ -n "$bin" ] && [ -x "$bin" ] || die "cannot find the guest test binary"
	install -m 0755 "$bin" "$out/memreg_rust_test"
	for ex in $examples; do
		f=$CARGO_TARGET_DIR/$target/release/examples/$ex
		[ -x "$f" ] || die "no example binary $f"
		install -m 0755 "$f" "$out/memreg-rs-$ex"
	done
	# A dynamically linked binary would not start in the guest.
	for f in "$out/memreg_rust_test" "$out"/memreg-rs-*; do
		if command -v file >/dev/null 2>&1; then
			file -b "$f" | grep -q 'statically linked' ||
				die "$f is not statically linked: $(file -b "$f")"
		fi
	done
	log "wrote $out/memreg_rust_test and $out/memreg-rs-{${examples// /,}}"
}

case ${1:-} in
host-check)
	[ $# -eq 1 ] || die "usage: $0 host-check | guest OUTDIR"
	host_check
	;;
guest)
	[ $# -eq 2 ] || die "usage: $0 host-check | guest OUTDIR"
	guest "$2"
	;;
*)
	die "usage: $0 host-check | guest OUTDIR"
	;;
esac
