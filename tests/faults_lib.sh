# faults_lib.sh: helpers shared by pipeline_faults.sh and pipeline_limits.sh
# (sourced after tests/lib.sh and t_tmpdir): one ksef-sim over TLS with a
# throwaway CA, logging every request (-v) so the tests can read the times
# at which requests arrived; a ksefd config aimed at it; counts of states;
# and the simulator's registry checked for exactly-once.
#
#   fl_setup                      CA, certificate and token file
#   fl_sim_start ARGS...          start ksef-sim (sets FL_SIM_URL, FL_SIM_ROOT)
#   fl_sim_stop                   stop it (also at exit)
#   fl_sim METHOD PATH [ARGS...]  a /_sim/ request, body on stdout
#   fl_sim_faults JSON            POST /_sim/faults; 0 when taken
#   fl_stat KEY...                a number from GET /_sim/stats
#                                 (fl_stat invoices received)
#   fl_received_at_least N        the simulator received N invoices
#   fl_conf FILE [EXTRA]          ksefd config; EXTRA lines appended;
#                                 FL_TRACE sets [log] trace
#   fl_post PREFIX COUNT          COUNT new invoices (P_2 = PREFIX/i) through
#                                 the API; 0 when all were answered 201
#   fl_count STATE                invoices in STATE (GET /v1/invoices?state=)
#   fl_done_is N                  exactly N invoices are DONE
#   fl_exactly_once N             the simulator registered N invoices of
#                                 FL_NIP, each (number) once; prints why not
#   fl_sends FILE                 "epoch_ms status" of every invoice send the
#                                 simulator received, from its log, into FILE
: "${FL_NIP:=5265877635}"
FL_SIM=$top_builddir/tests/sim/ksef-sim
FL_LOADGEN=$top_builddir/tests/loadgen
FL_TEMPLATE=$top_srcdir/tests/sim/data/fa3-sample.xml
FL_SIM_PID=
FL_SIM_URL=
FL_SIM_ROOT=
FL_SIM_LOG=

. "$top_srcdir/tests/sim/mkcert.sh"

fl_cleanup() {
	_fst=$?
	if [ -n "$KSEFD_PID" ]; then
		ksefd_stop TERM || ksefd_stop KILL
	fi
	fl_sim_stop
	(exit $_fst)
	t_cleanup
}

fl_setup() {
	[ -x "$FL_SIM" ] || skip_all "ksef-sim not built"
	command -v python3 >/dev/null || skip_all "python3 not available"
	trap fl_cleanup EXIT
	sim_mkcert "$T_TMP/tls" || bail "cannot make the test CA and certificate"
	t_secret "$T_TMP/token" "20250101-EC-0000000001-0000000001-01|nip-$FL_NIP|faults"
}

fl_sim_start() {
	FL_SIM_LOG=$T_TMP/sim.log
	: >"$T_TMP/sim.out"
	"$FL_SIM" -v --listen 127.0.0.1:0 --tls-cert "$T_TMP/tls/server.crt" \
	    --tls-key "$T_TMP/tls/server.key" \
	    --token "$FL_NIP:$(cat "$T_TMP/token")" "$@" \
	    >"$T_TMP/sim.out" 2>>"$FL_SIM_LOG" &
	FL_SIM_PID=$!
	wait_until 10 grep -q '^url=' "$T_TMP/sim.out" || return 1
	FL_SIM_URL=$(sed -n 's/^url=//p' "$T_TMP/sim.out")
	FL_SIM_ROOT=${FL_SIM_URL%/v2}
}

fl_sim_stop() {
	[ -n "$FL_SIM_PID" ] || return 0
	kill -TERM "$FL_SIM_PID" 2>/dev/null
	wait "$FL_SIM_PID" 2>/dev/null
	FL_SIM_PID=
}

fl_sim() {
	_fm=$1 _fp=$2
	shift 2
	curl -sS --cacert "$T_TMP/tls/ca.crt" -X "$_fm" "$@" "$FL_SIM_ROOT/_sim/$_fp"
}

fl_sim_faults() {
	fl_sim POST faults -f -o /dev/null -H 'Content-Type: application/json' \
	    --data-binary "$1"
}

fl_stat() {
	fl_sim GET stats | python3 -c 'import json, sys
v = json.load(sys.stdin)
for k in sys.argv[1:]:
    v = v[k]
print(v)' "$@"
}

fl_received_at_least() {
	[ "$(fl_stat invoices received)" -ge "$1" ]
}

fl_conf() {
	cat >"$1" <<EOF
[daemon]
pid_file = $T_TMP/ksefd.pid
[log]
level = info
${FL_TRACE:+trace = $FL_TRACE}
[ksef]
environment = $FL_SIM_URL
ca_file = $T_TMP/tls/ca.crt
latarnia_url = ${FL_LATARNIA:-$FL_SIM_ROOT/latarnia}
[storage]
database = $T_TMP/db
map_size = 64M
[api]
socket = $T_TMP/ksefd.sock
[retry]
backoff_min = 50ms
backoff_max = 1s
[poll]
auth_interval = 50ms
status_interval = 200ms
[reconcile]
interval = 0
[context $FL_NIP]
token_file = $T_TMP/token
EOF
	[ $# -lt 2 ] || printf '%s\n' "$2" >>"$1"
}

fl_post() {
	"$FL_LOADGEN" -s "$T_TMP/ksefd.sock" -t "$FL_TEMPLATE" -c 8 -n "$2" \
	    -d "$2" -p "$1" >"$T_TMP/lg-$1" 2>&1
	grep -q "\"201\":$2[,}]" "$T_TMP/lg-$1"
}

fl_count() {
	"$KSEFCTL" -s "$T_TMP/ksefd.sock" -j list --all --state "$1" 2>/dev/null |
	    grep -c '"id"'
}

fl_done_is() {
	[ "$(fl_count DONE)" -eq "$1" ]
}

fl_exactly_once() {
	fl_sim GET invoices >"$T_TMP/sim-invoices.json" || return 1
	python3 - "$T_TMP/sim-invoices.json" "$FL_NIP" "$1" <<'PY'
import collections, json, sys
d = json.load(open(sys.argv[1]))
inv = [i for i in d["invoices"] if i["nip"] == sys.argv[2]]
per = collections.Counter(i["number"] for i in inv)
twice = sorted(n for n, c in per.items() if c > 1)
if len(inv) != int(sys.argv[3]) or twice:
    print("registered %d (want %s), more than once: %s" % (len(inv), sys.argv[3], twice[:5]))
    sys.exit(1)
PY
}

# The simulator logs "DATE.mmm sim: METHOD URI -> STATUS"; an invoice send
# is POST /v2/sessions/online/REF/invoices.
fl_sends() {
	python3 - "$FL_SIM_LOG" >"$1" <<'PY'
import datetime, re, sys
rx = re.compile(r"^(\S+) sim: POST /v2/sessions/online/[^/ ]+/invoices -> (\d+)")
for l in open(sys.argv[1], errors="replace"):
    m = rx.match(l)
    if m:
        t = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f").timestamp()
        print(int(round(t * 1000)), m.group(2))
PY
}
