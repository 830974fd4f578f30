#!/usr/bin/env bash
# make check: builds everything, runs the host checks, boots the guest once
# to run KUnit (the kernel crate doctests at boot, memreg's own suites at
# module load), every kselftest under tools/testing/selftests/memreg/, the
# Rust crate's guest test and the libraries' example programs, then reads the
# serial log. The host checks include the user-space libraries
# (scripts/check-libs.sh). Last, the two-guest run (scripts/pair.sh).
# Prints one line per check and ends with "N passed, N failed"; exits non-zero
# on any failure, on a kernel BUG/WARNING/Oops/lockdep/KASAN report and on a
# hung guest.
set -uo pipefail
. "$(dirname "$0")/config.sh"

passed=0
failed=0
result() { # result ok|FAIL what
	printf '%-5s %s\n' "$1" "$2"
	if [ "$1" = ok ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
}
finish() {
	echo "$passed passed, $failed failed"
	[ "$failed" = 0 ]
	exit
}

"$MEMREG_TOP/scripts/toolchain.sh" || { result FAIL "toolchain set-up"; finish; }
"$MEMREG_TOP/scripts/build-kernel.sh" || { result FAIL "kernel build"; finish; }

# Host checks.
if "$MEMREG_TOP/scripts/build-module.sh"; then
	result ok "host: memreg.ko builds with CLIPPY=1, no warnings"
else
	result FAIL "host: memreg.ko builds with CLIPPY=1, no warnings"
	finish
fi
if "$MEMREG_TOP/scripts/rustfmt.sh" --check; then
	result ok "host: rustfmt (kernel .rustfmt.toml) has nothing to change"
else
	result FAIL "host: rustfmt (kernel .rustfmt.toml) has nothing to change"
fi
if python3 "$MEMREG_TOP/scripts/check-layout.py" "$MEMREG_TOP/rust"; then
	result ok "host: driver modules import one way, no file over 800 lines"
else
	result FAIL "host: driver modules import one way, no file over 800 lines"
fi
kdoc=$("$KSRC_DIR/scripts/kernel-doc" -none -Wall "$MEMREG_TOP/include/uapi/linux/memreg.h" 2>&1)
if [ -z "$kdoc" ]; then
	result ok "host: the uapi header's kernel-doc has no warning"
else
	printf '%s\n' "$kdoc" | head -n 20 | sed 's/^/      /'
	result FAIL "host: the uapi header's kernel-doc has no warning"
fi
# The user-space libraries: libmemreg and the Rust crates.
while read -r kind what; do
	case $kind in
	ok) result ok "host: $what" ;;
	FAIL) result FAIL "host: $what" ;;
	*) printf '%s %s\n' "$kind" "$what" ;;
	esac
done < <("$MEMREG_TOP/scripts/check-libs.sh")
if "$MEMREG_TOP/scripts/build-guest.sh"; then
	result ok "host: selftests and tools compile with -Wall -Werror"
else
	result FAIL "host: selftests and tools compile with -Wall -Werror"
	finish
fi

# The guest run.
run=$MEMREG_BUILD/check-run.sh
cat >"$run" <<'GUEST'
rc=0
# Leaks are counted from here on: what boot and module load left is not ours.
kmemleak=/sys/kernel/debug/kmemleak
[ -w $kmemleak ] && echo clear >$kmemleak
for t in /bin/*_test; do
	n=${t##*/}
	echo "MEMREG-SELFTEST-BEGIN $n"
	( "$t" 2>&1; echo $? >/tmp/rc ) | sed "s/^/[$n] /"
	r=$(cat /tmp/rc)
	echo "MEMREG-SELFTEST-END $n $r"
	[ "$r" = 0 ] || rc=1
done
# The libraries' example programs (the README's among them) exit 0.
for t in /bin/memreg-hello /bin/memreg-rs-register_copy /bin/memreg-rs-ring_copy \
	/bin/memreg-rs-pool /bin/memreg-rs-peer_write; do
	n=${t##*/}
	( "$t" 2>&1; echo $? >/tmp/rc ) | sed "s/^/[$n] /"
	echo "MEMREG-EXAMPLE-END $n $(cat /tmp/rc)"
done
# The clients: UCX's registration cache and libfabric's MR cache (verbs over
# soft-iWARP) with memreg as their memory monitor, each printing TAP lines.
# Without memreg, libfabric turns its cache off (--no-monitor); with a
# monitor that reports nothing, its cache hands out stale MRs
# (--blind-monitor): the bug class memreg ends, shown on the same traffic.
for c in "memreg-ucx-rcache" "memreg-ucx-rcache --mode=pinned" \
	"memreg-ofi-mrcache" "memreg-ofi-mrcache --no-monitor" \
	"memreg-ofi-mrcache --blind-monitor"; do
	n=$(echo "$c" | tr ' ' '_')
	echo "MEMREG-CLIENT-BEGIN $n"
	( /bin/$c 2>&1; echo $? >/tmp/rc ) | sed "s/^/{$n} /"
	echo "MEMREG-CLIENT-END $n $(cat /tmp/rc)"
done
# Unload (freeing everything the module holds) and load again, then let
# kmemleak look: an object must be unreferenced for 5 s and two scans.
if [ -w $kmemleak ]; then
	rmmod memreg && insmod /memreg.ko $MEMREG_MODULE_ARGS
	sleep 6
	echo scan >$kmemleak
	sleep 1
	echo scan >$kmemleak
	echo "MEMREG-KMEMLEAK-BEGIN"
	cat $kmemleak
	echo "MEMREG-KMEMLEAK-END $(grep -c 'unreferenced object' $kmemleak)"
fi
exit $rc
GUEST
log=$MEMREG_BUILD/check.log
tests=("$MEMREG_BUILD"/guest-bin/*_test "$MEMREG_BUILD"/guest-bin/memreg-hello
	"$MEMREG_BUILD"/guest-bin/memreg-rs-* "$MEMREG_BUILD"/guest-bin/memreg-ucx-rcache
	"$MEMREG_BUILD"/guest-bin/memreg-ofi-mrcache)
"$MEMREG_TOP/scripts/guest.sh" -q -l "$log" -t "${MEMREG_GUEST_TIMEOUT:-1200}" "$run" "${tests[@]}"
status=$?
case $status in
0 | 1) result ok "guest: booted and reported its status" ;;
124) result FAIL "guest: hung and was killed (log: $log)" ;;
*) result FAIL "guest: panicked or stopped without reporting (log: $log)" ;;
esac

# KUnit: test cases are the indented KTAP result lines the kernel prints.
# Passes are counted up to the first selftest: tests that reload the module
# run its suites again, and those runs must not inflate the count; a failure
# counts wherever it is.
read -r kpass kfail kskip < <(awk '
	/^MEMREG-SELFTEST-BEGIN / { selftests = 1 }
	/^ +ok [0-9]+ / && !selftests { if ($0 ~ /# SKIP/) s++; else p++ }
	/^ +not ok [0-9]+ / { f++; print "FAIL  kunit: " $0 > "/dev/stderr" }
	END { print p + 0, f + 0, s + 0 }' "$log")
printf '%-5s %s\n' "$([ "$kfail" = 0 ] && echo ok || echo FAIL)" \
	"kunit: $kpass cases passed, $kfail failed, $kskip skipped"
passed=$((passed + kpass))
failed=$((failed + kfail))
[ "$kpass" -gt 0 ] || result FAIL "kunit: no KUnit results in the log"

# kselftests: each result line counts; a program that did not exit 0 or
# whose results fall short of its plan counts as one more failure.
while read -r kind name rest; do
	case $kind in
	ok) result ok "kselftest: $name" ;;
	not_ok) result FAIL "kselftest: $name $rest" ;;
	skip) printf '%-5s %s\n' skip "kselftest: $name" ;;
	prog) result FAIL "kselftest: $name $rest" ;;
	esac
done < <(awk '
	/^MEMREG-SELFTEST-BEGIN / { prog = $2; plan[prog] = -1; seen[prog] = 0; next }
	/^MEMREG-SELFTEST-END / {
		if ($3 != 0) print "prog", $2, "exited with status " $3
		else if (plan[$2] >= 0 && seen[$2] != plan[$2]) print "prog", $2, "ran " seen[$2] " of " plan[$2] " tests"
		done[$2] = 1; next
	}
	/^\[[^]]+\] / {
		p = substr($1, 2, length($1) - 2); line = substr($0, length($1) + 2)
		if (line ~ /^1\.\.[0-9]+/) plan[p] = substr(line, 4) + 0
		else if (line ~ /^ok [0-9]+ /) {
			seen[p]++; split(line, w, " ")
			print (line ~ /# SKIP/ ? "skip" : "ok"), p "/" w[3]
		} else if (line ~ /^not ok [0-9]+ /) {
			seen[p]++; split(line, w, " ")
			print "not_ok", p "/" w[4], "(see " p " in the log)"
		}
	}
	END { for (p in plan) if (!(p in done)) print "prog", p, "did not finish" }' "$log")

examples=0
while read -r name rc; do
	examples=$((examples + 1))
	if [ "$rc" = 0 ]; then
		result ok "example: $name exits 0"
	else
		result FAIL "example: $name exited with status $rc (see [$name] in the log)"
	fi
done < <(sed -n 's/^MEMREG-EXAMPLE-END //p' "$log")
[ "$examples" = 5 ] || result FAIL "example: $examples of 5 example programs reported"

# The clients: each TAP line counts; a run that did not exit 0 counts as one
# more failure, and each of the five runs must report.
clients=0
while read -r kind name rest; do
	case $kind in
	ok) result ok "client: $name: $rest" ;;
	not_ok) result FAIL "client: $name: $rest (see {$name} in the log)" ;;
	skip) printf '%-5s %s\n' skip "client: $name: $rest" ;;
	end)
		clients=$((clients + 1))
		[ "$rest" = 0 ] || result FAIL "client: $name exited with status $rest (see {$name} in the log)" ;;
	esac
done < <(awk '
	/^MEMREG-CLIENT-END / { print "end", $2, $3; next }
	/^\{[^}]+\} / {
		p = substr($1, 2, length($1) - 2); line = substr($0, length($1) + 2)
		if (line ~ /^ok [0-9]+ /) {
			sub(/^ok [0-9]+ (- )?/, "", line)
			print (line ~ /# SKIP/ ? "skip" : "ok"), p, line
		} else if (line ~ /^not ok [0-9]+ /) {
			sub(/^not ok [0-9]+ (- )?/, "", line)
			print "not_ok", p, line
		}
	}' "$log")
[ "$clients" = 5 ] || result FAIL "client: $clients of 5 client runs reported"

leaks=$(sed -n 's/^MEMREG-KMEMLEAK-END \([0-9]*\)$/\1/p' "$log")
if [ -z "$leaks" ]; then
	result FAIL "guest: kmemleak scan after the tests did not run"
elif [ "$leaks" = 0 ]; then
	result ok "guest: kmemleak finds no leak after the tests and a module reload"
else
	sed -n '/^MEMREG-KMEMLEAK-BEGIN/,/^MEMREG-KMEMLEAK-END/p' "$log" | head -n 40 | sed 's/^/      /'
	result FAIL "guest: kmemleak finds $leaks leaked objects (log: $log)"
fi
if grep -q '^MEMREG-GUEST: rmmod ok' "$log"; then
	result ok "guest: memreg unloads cleanly"
else
	result FAIL "guest: memreg unloads cleanly"
fi
bad='(BUG:|WARNING:|Oops|Kernel panic|general protection fault|circular locking dependency|recursive locking detected|inconsistent lock state|DEBUG_LOCKS_WARN_ON|KASAN:|UBSAN:|INFO: task .* blocked|Call Trace:|sleeping function called from invalid context)'
if grep -E -q "$bad" "$log"; then
	grep -E -n -m 5 "$bad" "$log" | sed 's/^/      /'
	result FAIL "guest: kernel log free of BUG/WARNING/Oops/lockdep/KASAN reports"
else
	result ok "guest: kernel log free of BUG/WARNING/Oops/lockdep/KASAN reports"
fi
echo "      serial log: $log"

# The two-guest run (scripts/pair.sh, two minutes): libfabric's verbs
# provider over soft-iWARP between two guests, memreg's monitor on both
# sides. MEMREG_CHECK_PAIR=0 leaves it out.
if [ "${MEMREG_CHECK_PAIR:-1}" != 0 ]; then
	pairout=$MEMREG_BUILD/check-pair.out
	"$MEMREG_TOP/scripts/pair.sh" check >"$pairout" 2>&1
	prc=$?
	pairs=0
	while IFS= read -r line; do
		case $line in
		"["*"] ok "*)
			pairs=$((pairs + 1))
			rest=${line#*] ok }
			result ok "pair: ${line%%]*}] ${rest#* - }" ;;
		"["*"] not ok "*)
			pairs=$((pairs + 1))
			rest=${line#*] not ok }
			result FAIL "pair: ${line%%]*}] ${rest#* - }" ;;
		"FAIL  ["*)
			result FAIL "pair: ${line#FAIL  }" ;;
		esac
	done <"$pairout"
	[ "$pairs" -gt 0 ] || result FAIL "pair: the two-guest run reported nothing (output: $pairout)"
	[ "$prc" = 0 ] || result FAIL "pair: make check-pair exited with status $prc (output: $pairout)"
	for side in server client; do
		plog=$MEMREG_BUILD/pair-$side.log
		if [ -f "$plog" ] && ! grep -E -q "$bad" "$plog"; then
			result ok "pair: $side guest's kernel log free of BUG/WARNING/Oops/lockdep/KASAN reports"
		else
			[ -f "$plog" ] && grep -E -n -m 5 "$bad" "$plog" | sed 's/^/      /'
			result FAIL "pair: $side guest's kernel log free of BUG/WARNING/Oops/lockdep/KASAN reports"
		fi
	done
	echo "      pair output: $pairout; serial logs: $MEMREG_BUILD/pair-server.log, $MEMREG_BUILD/pair-client.log"
fi
finish
