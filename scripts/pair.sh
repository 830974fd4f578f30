#!/usr/bin/env bash
# make run-pair / make check-pair: two guests joined by a virtual network on
# the host (QEMU stream netdevs over a unix socket; nothing leaves the machine),
# each with a virtio-net device, soft-iWARP on it and memreg loaded. The
# server guest (192.0.2.1) runs memreg-ofi-pair --server, the client guest
# (192.0.2.2) runs the client, is killed mid-stream and runs again, then the
# benchmark. Both serial logs are kept (build/pair-server.log,
# build/pair-client.log) and both sides' TAP lines are printed.
#
#   pair.sh run     prints both sides' results
#   pair.sh check   the same, then "N passed, N failed"; fails on any
#                   failure or a side that did not report
#
# The pair's own figures go to build/bench/pair.csv
# (metric,value,baseline,ratio,target), drawn (scripts/bench-svg.py) in
# build/bench/pair.svg.
set -euo pipefail
. "$(dirname "$0")/config.sh"
mode=${1:-run}

"$MEMREG_TOP/scripts/toolchain.sh"
"$MEMREG_TOP/scripts/build-kernel.sh"
"$MEMREG_TOP/scripts/build-module.sh"
"$MEMREG_TOP/scripts/build-guest.sh"

bin=$MEMREG_BUILD/guest-bin/memreg-ofi-pair
[ -x "$bin" ] || die "$bin was not built"
server=$MEMREG_BUILD/pair-server.sh
client=$MEMREG_BUILD/pair-client.sh
rounds=${MEMREG_PAIR_ROUNDS:-60}

# Each side brings up its address and siw0 on eth0 first, with an MTU of
# 65000: the emulated guests pay per packet, not per byte (a 1500-byte MTU
# moved 0.6 MB/s between them, 65000 ten times that), and the frames only
# ever cross the unix socket. The server takes
# three sessions: the client killed mid-stream, the client run to the end,
# and the benchmark (which runs the cache off in a session of its own).
cat >"$server" <<EOF
ip link set eth0 mtu 65000 || exit 1
memreg-ofi-pair --setup-net eth0 192.0.2.1/24 || exit 1
echo MEMREG-PAIR-BEGIN
memreg-ofi-pair --server 192.0.2.1 --sessions 4 --rounds $rounds
rc=\$?
echo "MEMREG-PAIR-END \$rc"
exit \$rc
EOF
cat >"$client" <<EOF
ip link set eth0 mtu 65000 || exit 1
memreg-ofi-pair --setup-net eth0 192.0.2.2/24 || exit 1
# Wait for the server's address, then give its listener a moment.
i=0
until ping -c 1 -W 1 192.0.2.1 >/dev/null 2>&1; do
	i=\$((i + 1))
	[ \$i -lt 120 ] || { echo "MEMREG-PAIR: server unreachable"; exit 1; }
done
sleep 3
echo MEMREG-PAIR-BEGIN
# A client killed mid-stream: the server must recover.
memreg-ofi-pair --client 192.0.2.1 --rounds 1000000 >/tmp/killed.log 2>&1 &
pid=\$!
sleep 20
kill -9 \$pid
wait \$pid 2>/dev/null
echo "# the first client was killed after 20 s, mid-stream"
sleep 2
memreg-ofi-pair --client 192.0.2.1 --rounds $rounds
rc=\$?
memreg-ofi-pair --client 192.0.2.1 --bench || rc=1
echo "MEMREG-PAIR-END \$rc"
exit \$rc
EOF

# One stream (a unix socket under build/) carries the Ethernet frames between
# the two guests: reliable, so a guest slowed by the emulator never loses a
# frame (a UDP netdev dropped them under bursts of writes and TCP in the
# guests backed off for tens of seconds). The server's QEMU listens, the
# client's connects once the socket exists.
sock=$MEMREG_BUILD/pair-net.sock
# A unix socket's path holds at most 107 bytes: a deep build directory
# gets one under /tmp instead.
if [ ${#sock} -gt 100 ]; then
	sock=$(mktemp -u /tmp/memreg-pair.XXXXXX.sock)
	trap 'rm -f "$sock"' EXIT
fi
rm -f "$sock"
net() { # MAC server=on|off
	echo "-netdev stream,id=n0,server=$2,addr.type=unix,addr.path=$sock -device virtio-net-pci,netdev=n0,mac=$1"
}
slog=$MEMREG_BUILD/pair-server.log
clog=$MEMREG_BUILD/pair-client.log
timeout_s=${MEMREG_GUEST_TIMEOUT:-1500}
set +e
"$MEMREG_TOP/scripts/guest.sh" -q -l "$slog" -n pair-server -t "$timeout_s" \
	-k "kunit.enable=0 quiet loglevel=3" -x "$(net 52:54:00:00:02:01 on)" \
	"$server" "$bin" &
spid=$!
i=0
until [ -S "$sock" ]; do
	i=$((i + 1))
	if [ $i -gt 1200 ] || ! kill -0 $spid 2>/dev/null; then
		kill $spid 2>/dev/null || true
		die "the server guest's QEMU did not open $sock"
	fi
	sleep 0.1
done
"$MEMREG_TOP/scripts/guest.sh" -q -l "$clog" -n pair-client -t "$timeout_s" \
	-k "kunit.enable=0 quiet loglevel=3" -x "$(net 52:54:00:00:02:02 off)" \
	"$client" "$bin"
cstatus=$?
wait $spid
sstatus=$?
set -e

passed=0
failed=0
show() { # SIDE LOG STATUS
	local side=$1 log=$2 status=$3 lines
	lines=$(sed -n '/^MEMREG-PAIR-BEGIN/,/^MEMREG-PAIR-END/p' "$log" | sed '1d;$d')
	printf '%s\n' "$lines" | grep -E '^(ok|not ok|#)' | grep -v '^# ' | sed "s/^/[$side] /" || true
	printf '%s\n' "$lines" | grep -E '^# ' | sed "s/^/[$side] /" || true
	passed=$((passed + $(printf '%s\n' "$lines" | grep -c '^ok ' || true)))
	failed=$((failed + $(printf '%s\n' "$lines" | grep -c '^not ok ' || true)))
	if ! grep -q '^MEMREG-PAIR-END 0$' "$log"; then
		echo "FAIL  [$side] did not finish with status 0 (guest status $status; log: $log)"
		failed=$((failed + 1))
	fi
}
show server "$slog" "$sstatus"
show client "$clog" "$cstatus"

# The pair's figures: the client's BENCH lines.
csv=$MEMREG_BUILD/bench/pair.csv
mkdir -p "$(dirname "$csv")"
awk -v out="$csv" '
	/^BENCH / { v[$2] = $3 }
	END {
		print "metric,value,baseline,ratio,target" > out
		n = split("4kib 64kib 1mib", sz, " ")
		for (i = 1; i <= n; i++) {
			c = v["pair_write_" sz[i] "_cache_ns"]; u = v["pair_write_" sz[i] "_nocache_ns"]
			t = sz[i] == "64kib" ? ">=1.5" : ""
			r = (c > 0 && u > 0) ? sprintf("%.2f", u / c) : "unresolved"
			printf "pair_write_%s_cache_speedup,%s,%s,%s,%s\n", sz[i], c, u, r, t >> out
			printf "%-34s %12s %12s %10s %7s\n", "pair_write_" sz[i] "_cache_speedup", c, u, r, t
			c = v["pair_write_" sz[i] "_cache_mbps"]; u = v["pair_write_" sz[i] "_nocache_mbps"]
			r = (c > 0 && u > 0) ? sprintf("%.2f", c / u) : "unresolved"
			printf "pair_write_%s_bw_cache_vs_nocache,%s,%s,%s,\n", sz[i], c, u, r >> out
			printf "%-34s %12s %12s %10s %7s\n", "pair_write_" sz[i] "_bw_cache_vs_nocache", c, u, r, ""
		}
		h = v["pair_cache_hit_rate"]
		printf "pair_cache_hit_rate,%s,1,%s,\n", h, h >> out
		printf "%-34s %12s\n", "pair_cache_hit_rate", h
	}' "$clog"
bench_svg "$csv"
log "the pair's figures: $csv, drawn in ${csv%.csv}.svg; serial logs: $slog, $clog"

if [ "$mode" = check ]; then
	echo "$passed passed, $failed failed"
	[ "$failed" = 0 ] && [ "$passed" -gt 0 ]
fi
