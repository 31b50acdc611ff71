#!/bin/sh
# ksef_sim.sh: runs tests/test_ksef_sim (the KSeF layer end to end) against
# a ksef-sim it starts over TLS on a free port with a throwaway CA
# (tests/sim/mkcert.sh).  The C program prints the TAP; a simulator that
# does not start is a failed test, not a skip.
. "$top_srcdir/tests/sim/mkcert.sh"

NIP=5265877635
TOKEN="20250101-EC-0123456789-ABCDEF0123-45|nip-$NIP|ksef-layer-test"
SIM=$top_builddir/tests/sim/ksef-sim
PROG=$top_builddir/tests/test_ksef_sim
SAMPLE=$top_srcdir/tests/sim/data/fa3-sample.xml
T=$(mktemp -d "${TMPDIR:-/tmp}/ksef-sim-test.XXXXXX") || exit 1
SIM_PID=

cleanup() {
	if [ -n "$SIM_PID" ]; then
		kill -TERM "$SIM_PID" 2>/dev/null
		wait "$SIM_PID" 2>/dev/null
	fi
	if [ -n "${KEEP_TMP:-}" ]; then echo "# kept $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

failed_setup() {
	echo "not ok 1 - $1"
	[ -f "$T/sim.log" ] && sed 's/^/# /' "$T/sim.log"
	echo "1..1"
	exit 1
}

sim_mkcert "$T/tls" || failed_setup "test CA and server certificate"
"$SIM" --listen 127.0.0.1:0 --state "$T/state" --tls-cert "$T/tls/server.crt" \
	--tls-key "$T/tls/server.key" --token "$NIP:$TOKEN" --limits off \
	--processing-delay 50ms --auth-delay 100ms ${SIM_ARGS:-} >"$T/sim.out" \
	2>"$T/sim.log" &
SIM_PID=$!
n=0
while ! grep -q '^url=' "$T/sim.out" 2>/dev/null; do
	n=$((n + 1))
	[ $n -le 200 ] && kill -0 "$SIM_PID" 2>/dev/null ||
		failed_setup "ksef-sim starts"
	sleep 0.05
done
URL=$(sed -n 's/^url=//p' "$T/sim.out")
"$PROG" "$URL" "$T/tls/ca.crt" "$TOKEN" "$SAMPLE"
