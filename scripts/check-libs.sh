#!/usr/bin/env bash
# Host checks of the user-space libraries, for make check: one line per
# check, "ok <what>" or "FAIL <what>", details indented before a failure.
#
# libmemreg (tools/lib/memreg): builds static and shared with -Wall -Wextra;
# exports exactly the functions its header declares, each versioned
# LIBMEMREG_1.x; its host tests pass under ASan and UBSan; make install with
# DESTDIR gives a tree a program builds against through pkg-config, shared
# and static; every function has a man page and every page renders without
# a warning. The Rust crates (tools/lib/rust): cargo fmt, clippy -D warnings
# and cargo test.
set -uo pipefail
. "$(dirname "$0")/config.sh"

lib=$MEMREG_TOP/tools/lib/memreg
out=$MEMREG_BUILD/libmemreg/
logs=$MEMREG_BUILD/logs
mkdir -p "$logs"

check() { # check "what" command...
	local what=$1 log
	shift
	log=$logs/check-libs-$(printf '%s' "$what" | tr -c 'a-zA-Z0-9' _ | cut -c1-60).log
	if "$@" >"$log" 2>&1; then
		echo "ok $what"
	else
		tail -n 20 "$log" | sed 's/^/      /'
		echo "FAIL $what (log: $log)"
	fi
}

build() {
	make -C "$lib" OUTPUT="$out" UAPI_DIR="$MEMREG_TOP/include/uapi" all
}

# The functions libmemreg.h declares (not the inline ones), the versioned
# symbols the shared library defines, and the version script must agree.
exports() {
	python3 - "$lib/include/libmemreg.h" "$lib/libmemreg.map" "$out"libmemreg.so.1.0.0 <<'PY'
import re, subprocess, sys
hdr, mapfile, so = sys.argv[1:4]
text = open(hdr).read()
text = re.sub(r'/\*.*?\*/', '', text, flags=re.S)
declared = set()
for m in re.finditer(r'^(?!static|#|typedef|enum|\s)[^;{]*?\b(memreg_\w+)\s*\([^;{]*\);', text, re.M):
    declared.add(m.group(1))
mapped = set(re.findall(r'^\s+(memreg_\w+);', open(mapfile).read(), re.M))
syms = subprocess.run(['nm', '-D', '--defined-only', so], capture_output=True, text=True, check=True).stdout
exported, unversioned = set(), set()
for line in syms.splitlines():
    name = line.split()[-1]
    base = name.split('@')[0]
    if not base.startswith('memreg'):
        continue
    if re.search(r'@@LIBMEMREG_1\.[0-9]+$', name):
        exported.add(base)
    else:
        unversioned.add(name)
bad = False
for what, s in (('declared, not exported', declared - exported),
                ('exported, not declared', exported - declared),
                ('in the version script, not declared', mapped - declared),
                ('exported without a version', unversioned)):
    if s:
        bad = True
        print(what + ':', ' '.join(sorted(s)))
print(len(declared), 'functions declared and exported')
sys.exit(1 if bad else 0)
PY
}

install_and_link() {
	local stage=$MEMREG_BUILD/libmemreg-install prefix=/usr/local pc
	rm -rf "$stage"
	make -C "$lib" OUTPUT="$out" UAPI_DIR="$MEMREG_TOP/include/uapi" \
		PREFIX=$prefix DESTDIR="$stage" install || return 1
	pc=$stage$prefix/lib/pkgconfig
	# The .pc names the final prefix; point pkg-config at the staged tree.
	export PKG_CONFIG_PATH=$pc PKG_CONFIG_SYSROOT_DIR=$stage
	pkg-config --exists memreg || return 1
	[ "$(pkg-config --modversion memreg)" = 1.0.0 ] || return 1
	# shellcheck disable=SC2046
	gcc -Wall -Wextra -Werror -o "$stage/hello-shared" "$MEMREG_TOP/samples/memreg/memreg-hello.c" \
		$(pkg-config --cflags --libs memreg) || return 1
	# shellcheck disable=SC2046
	gcc -Wall -Wextra -Werror -static -o "$stage/hello-static" \
		"$MEMREG_TOP/samples/memreg/memreg-hello.c" $(pkg-config --static --cflags --libs memreg) ||
		return 1
	file -b "$stage/hello-static" | grep -q 'statically linked' || return 1
	readelf -d "$stage/hello-shared" | grep -q 'NEEDED.*libmemreg.so.1' || return 1
	# Without /dev/memreg it stops at once with ENOENT, not a missing library.
	LD_LIBRARY_PATH=$stage$prefix/lib "$stage/hello-shared"
	[ $? -eq 1 ] || [ -e /dev/memreg ] || return 1
	[ -f "$stage$prefix/share/man/man7/memreg.7" ] || return 1
	[ -f "$stage$prefix/include/libmemreg/linux/memreg.h" ] || return 1
}

man_pages() {
	local f name missing=0 tmp
	for name in $(sed -e 's:/\*.*\*/::' "$lib/include/libmemreg.h" |
		grep -oE '\bmemreg_[a-z0-9_]+\(' | tr -d '(' | sort -u); do
		case $name in memreg__*) continue ;; esac
		[ -f "$lib/man/$name.3" ] || { echo "no man page: $name"; missing=1; }
	done
	[ -f "$lib/man/memreg.7" ] || { echo "no memreg.7"; missing=1; }
	# Render through a man tree, where the .so links resolve.
	tmp=$(mktemp -d)
	mkdir -p "$tmp/man3" "$tmp/man7"
	cp "$lib"/man/*.3 "$tmp/man3/"
	cp "$lib"/man/*.7 "$tmp/man7/"
	for f in "$tmp"/man3/*.3 "$tmp"/man7/*.7; do
		if ! (cd "$tmp" && groff -man -Tutf8 -ww -z "$f" 2>&1 | grep . && exit 1 || exit 0); then
			echo "warnings in $(basename "$f")"
			missing=1
		fi
	done
	rm -rf "$tmp"
	return $missing
}

check "libmemreg builds static and shared with -Wall -Wextra -Werror" build
check "libmemreg exports exactly its header's functions, each with a LIBMEMREG_1.x version" exports
check "libmemreg host tests pass under ASan and UBSan" \
	make -C "$lib" OUTPUT="$out" UAPI_DIR="$MEMREG_TOP/include/uapi" check
check "libmemreg installs with DESTDIR; a program links through pkg-config, shared and static" \
	install_and_link
check "libmemreg: every function has a man page, and every page renders cleanly" man_pages
check "Rust crates: cargo fmt, clippy -D warnings, cargo test" \
	"$MEMREG_TOP/scripts/build-rust.sh" host-check
check "the READMEs show the example programs exactly as the files are" python3 - "$MEMREG_TOP" <<'PY'
import sys
top = sys.argv[1]
pairs = [("README.md", "samples/memreg/memreg-hello.c"),
         ("tools/lib/memreg/README", "samples/memreg/memreg-hello.c"),
         ("README.md", "tools/lib/rust/memreg/examples/ring_copy.rs"),
         ("tools/lib/rust/README.md", "tools/lib/rust/memreg/examples/ring_copy.rs")]
bad = 0
for doc, prog in pairs:
    if open(f"{top}/{prog}").read() not in open(f"{top}/{doc}").read():
        print(f"{doc} does not show {prog} as it is")
        bad = 1
sys.exit(bad)
PY
