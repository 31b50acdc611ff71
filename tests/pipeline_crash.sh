#!/bin/sh
# pipeline_crash.sh: ksefd SIGKILLed at least 200 times while it submits
# 1000 invoices to ksef-sim (TLS) with faults on: 5xx answers, resets after
# the simulator processed a send, a small processing delay.  Kills land at
# every failpoint (sending-committed, send-response, status-response,
# upo-start, with varying N so they come at different moments) and at random
# times.  The invoices are fed through the spool a few per cycle, so every
# cycle has new work.  After the last restart every invoice must be DONE in
# ksefd, registered exactly once in the simulator under the KSeF number
# ksefd recorded, and the in-doubt resolution must have run.
#
# Needs ksefd built with --enable-failpoints (scripts/check does); skips
# otherwise.  CRASH_KILLS and CRASH_INVOICES override the sizes for a run
# by hand.
. "$top_srcdir/tests/lib.sh"
. "$top_srcdir/tests/sim/mkcert.sh"

KILLS=${CRASH_KILLS:-200}
INVOICES=${CRASH_INVOICES:-1000}
NIP=5265877635
SIM=$top_builddir/tests/sim/ksef-sim
TEMPLATE=$top_srcdir/tests/data/valid/fa3-csharp-invoice-template-fa-3.xml
PFX=CRASH

"$KSEFD" -V 2>/dev/null | grep -q '^failpoints' ||
	skip_all "ksefd has no failpoints (configure --enable-failpoints)"
command -v python3 >/dev/null || skip_all "python3 not found"

t_tmpdir
SIM_PID=
crash_cleanup() {
	_st=$?
	if [ -n "$SIM_PID" ]; then
		kill -TERM "$SIM_PID" 2>/dev/null
		wait "$SIM_PID" 2>/dev/null
	fi
	(exit $_st)
	t_cleanup
}
trap crash_cleanup EXIT

# --- the simulator ---------------------------------------------------------

sim_mkcert "$T_TMP/tls" || bail "test CA and server certificate"
TOKEN="20250101-EC-0123456789-ABCDEF0123-45|nip-$NIP|crash-test"
"$SIM" --listen 127.0.0.1:0 --tls-cert "$T_TMP/tls/server.crt" \
	--tls-key "$T_TMP/tls/server.key" --schemas "$top_srcdir/schemas" \
	--token "$NIP:$TOKEN" --limits off --seed 7 \
	--processing-delay 30ms --auth-delay 20ms \
	--fault invoiceSend:500:p=0.03 \
	--fault invoiceSend:reset-after:p=0.08 \
	--fault sessionInvoiceList:503:p=0.03 \
	--fault sessionMisc:503:p=0.03 \
	>"$T_TMP/sim.out" 2>"$T_TMP/sim.log" &
SIM_PID=$!
wait_until 10 grep -q '^url=' "$T_TMP/sim.out" ||
	{ sed 's/^/# /' "$T_TMP/sim.log"; bail "ksef-sim did not start"; }
URL=$(sed -n 's/^url=//p' "$T_TMP/sim.out")
sim_get() {
	curl -sf --cacert "$T_TMP/tls/ca.crt" "${URL%/v2}/_sim/$1"
}

# --- ksefd -------------------------------------------------------------------

mkdir -p "$T_TMP/tokens" "$T_TMP/spool/incoming" "$T_TMP/spool/accepted" \
	"$T_TMP/spool/refused" "$T_TMP/gen"
t_secret "$T_TMP/tokens/$NIP" "$TOKEN"
CONF=$T_TMP/ksefd.conf
cat >"$CONF" <<EOF
[daemon]
pid_file = $T_TMP/ksefd.pid
[log]
level = info
[ksef]
environment = $URL
ca_file = $T_TMP/tls/ca.crt
connect_timeout = 2s
request_timeout = 3s
max_in_flight = 16
[storage]
database = $T_TMP/db
map_size = 64M
[api]
socket = $T_TMP/ksefd.sock
[spool]
directory = $T_TMP/spool
rescan_interval = 1s
[retry]
backoff_min = 20ms
backoff_max = 300ms
[poll]
auth_interval = 20ms
status_interval = 50ms
[limits]
enabled = no
[context $NIP]
token_file = $T_TMP/tokens/$NIP
EOF

python3 - "$TEMPLATE" "$T_TMP/gen" "$INVOICES" "$PFX" <<'PY'
import re, sys
src, out, n, pfx = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
x = open(src, encoding="utf-8").read()
for i in range(n):
    open("%s/c%05d.xml" % (out, i), "w", encoding="utf-8").write(
        re.sub(r"<P_2>[^<]*</P_2>", "<P_2>%s/%d</P_2>" % (pfx, i), x))
PY
is "$(ls "$T_TMP/gen" | grep -c '\.xml$')" "$INVOICES" "$INVOICES invoices generated"

# feed N: move the next N generated invoices into the spool (atomic renames).
feed() {
	ls "$T_TMP/gen" | head -n "$1" | while read -r f; do
		mv "$T_TMP/gen/$f" "$T_TMP/spool/incoming/$f"
	done
}

# ms_wait MS CMD...: run CMD every 10 ms until it succeeds; 1 after MS ms.
ms_wait() {
	_n=$(($1 / 10))
	shift
	while [ "$_n" -gt 0 ]; do
		"$@" && return 0
		sleep 0.01
		_n=$((_n - 1))
	done
	"$@"
}

exited() { test -s "$T_TMP/ksefd.status"; }

# --- the kill loop -------------------------------------------------------------

# Each run logs to ksefd.log; all runs are collected in all.log.
ALL=$T_TMP/all.log
: >"$ALL"
rotate_log() {
	[ -f "$T_TMP/ksefd.log" ] && cat "$T_TMP/ksefd.log" >>"$ALL"
	: >"$T_TMP/ksefd.log"
}

started() { grep -q 'ksefd: ksefd .* started' "$T_TMP/ksefd.log"; }
started_or_exited() { started || exited; }

# run_start: ksefd in the foreground as lib.sh's ksefd_start does (its pid
# in KSEFD_PID, its exit status in ksefd.status), but polled in 10 ms
# steps so that a cycle stays short; 1 when it did not log "started" (a
# failpoint may kill it right after that line: it still started).
run_start() {
	rm -f "$T_TMP/ksefd.status" "$T_TMP/ksefd.run-pid"
	(
		sh -c 'echo $$ >"$1"; shift; exec "$@"' sh \
		    "$T_TMP/ksefd.run-pid" "$KSEFD" -d -f "$CONF" 2>>"$T_TMP/ksefd.log"
		echo $? >"$T_TMP/ksefd.status"
	) &
	ms_wait 5000 test -s "$T_TMP/ksefd.run-pid" || return 1
	KSEFD_PID=$(cat "$T_TMP/ksefd.run-pid")
	ms_wait 10000 started_or_exited
	started
}

# Invoices are fed through the spool a few per cycle, over all cycles.
per_cycle=$(( (INVOICES + KILLS - 1) / KILLS ))
FPS="sending-committed send-response status-response upo-start"
kills=0 fp_kills=0 rnd_kills=0 bad_exits=0 nostart=0 i=0
start_t=$(date +%s)
while [ "$kills" -lt "$KILLS" ]; do
	feed "$per_cycle"
	rotate_log
	# Cycle kinds: the four failpoints in turn, then a random kill.  The
	# Nth pass of a point varies from round to round; a status page comes
	# a few times per run, a send or UPO per invoice.
	kind=$((i % 5))
	round=$((i / 5))
	if [ "$kind" -lt 4 ]; then
		set -- $FPS
		shift "$kind"
		case $1 in
		status-response) n=$((round % 3 + 1)) ;;
		*) n=$((round * 3 % 8 + 1)) ;;
		esac
		KSEFD_FAILPOINTS="$1=$n"
		export KSEFD_FAILPOINTS
	fi
	if ! run_start; then
		nostart=$((nostart + 1))
		if [ "$nostart" -gt 5 ]; then
			tail -n 20 "$T_TMP/ksefd.log" | sed 's/^/# /'
			bail "ksefd does not start"
		fi
	fi
	unset KSEFD_FAILPOINTS
	if [ "$kind" -lt 4 ]; then
		# Up to 0.4 s for the failpoint; then a kill of our own.
		ms_wait 400 exited
	else
		# 0 to 200 ms after the start
		sleep "$(awk "BEGIN { srand($i); printf \"%.3f\", rand() * 0.2 }")"
	fi
	if exited; then
		fp_kills=$((fp_kills + 1))
		st=$(cat "$T_TMP/ksefd.status")
		if [ "$st" != 137 ]; then
			# not a failpoint's SIGKILL: a crash or an exit of its own
			bad_exits=$((bad_exits + 1))
			diag "run $i ended with status $st:"
			tail -n 5 "$T_TMP/ksefd.log" | sed 's/^/#   /'
		fi
	else
		kill -KILL "$KSEFD_PID"
		ms_wait 10000 exited || bail "ksefd did not die on SIGKILL"
		rnd_kills=$((rnd_kills + 1))
	fi
	KSEFD_PID=
	kills=$((kills + 1))
	i=$((i + 1))
done
rotate_log
diag "$kills kills in $(( $(date +%s) - start_t )) s: $fp_kills at failpoints, $rnd_kills by the test"
ok "at least 200 SIGKILLs" test "$kills" -ge 200
is "$bad_exits" 0 "every run ended by SIGKILL (no crash, no exit of its own)"

# --- the final run --------------------------------------------------------------

feed "$INVOICES"
ok "ksefd starts after the last kill" ksefd_start -f "$CONF"

count_done() {
	"$KSEFCTL" -j -s "$T_TMP/ksefd.sock" list --all >"$T_TMP/list.json" 2>/dev/null &&
	    [ "$(grep -c '"state": *"DONE"' "$T_TMP/list.json")" -ge "$INVOICES" ]
}
ok "all invoices DONE after the final restart" wait_until 60 count_done
ksefd_stop TERM
rotate_log
is "$KSEFD_STATUS" 0 "ksefd stops cleanly at the end"
sim_get invoices >"$T_TMP/sim.json" || fail "GET /_sim/invoices"

python3 - "$T_TMP/list.json" "$T_TMP/sim.json" "$INVOICES" "$PFX" >"$T_TMP/check.out" <<'PY'
import json, sys
lst, simf, n, pfx = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
recs = [json.loads(l) for l in open(lst) if l.strip()]
sim = json.load(open(simf))["invoices"]
want = set("%s/%d" % (pfx, i) for i in range(n))
mine = [r for r in recs if r.get("number") in want]
states = {}
for r in mine:
    states[r["state"]] = states.get(r["state"], 0) + 1
print("records %d" % len(mine))
print("states %s" % " ".join("%s=%d" % kv for kv in sorted(states.items())))
print("upo %d" % sum(1 for r in mine if r["state"] == "DONE" and r.get("upo")))
regs = [s for s in sim if s["number"] in want]
nums = {}
for s in regs:
    nums.setdefault(s["number"], []).append(s)
print("sim %d" % len(regs))
print("sim_distinct %d" % len(nums))
print("sim_twice %d" % sum(1 for v in nums.values() if len(v) > 1))
print("sim_missing %d" % len(want - set(nums)))
ok = 0
for r in mine:
    s = nums.get(r["number"])
    if s and len(s) == 1 and s[0]["ksefNumber"] == r.get("ksef_number"):
        ok += 1
print("same_number %d" % ok)
PY
sed 's/^/# /' "$T_TMP/check.out"
val() { sed -n "s/^$1 //p" "$T_TMP/check.out"; }
is "$(val records)" "$INVOICES" "ksefd has a record of every invoice"
is "$(val states)" "DONE=$INVOICES" "every ksefd record is DONE"
is "$(val upo)" "$INVOICES" "every record has its UPO stored"
is "$(val sim)" "$INVOICES" "the simulator registered $INVOICES invoices"
is "$(val sim_distinct)" "$INVOICES" "each invoice number once"
is "$(val sim_twice)" 0 "none twice"
is "$(val sim_missing)" 0 "none lost"
is "$(val same_number)" "$INVOICES" "ksefd's KSeF numbers are the simulator's"

# Exactly once toward KSeF: each send the simulator received left ksefd
# after a SENDING commit (no resend by the transport behind ksefd's back).
# A few duplicates may remain (a killed ksefd's send read by the simulator
# only after the next run listed the session); they must be rare.
sim_get stats >"$T_TMP/stats.json" || fail "GET /_sim/stats"
sim_sends=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["requests"]["invoiceSend"])' "$T_TMP/stats.json")
sim_dups=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["invoices"]["duplicate"])' "$T_TMP/stats.json")
sendings=$(grep -c -- '-> SENDING: attempt' "$ALL")
diag "sends: $sendings SENDING commits, $sim_sends received by the simulator, $sim_dups duplicates"
ok "no send without its SENDING commit" test "$sim_sends" -le "$sendings"
ok "duplicates at KSeF are rare (< 1%)" test "$((sim_dups * 100))" -lt "$INVOICES"

# The kills really landed everywhere, and the in-doubt path ran.
for fp in $FPS; do
	c=$(grep -c "failpoint: $fp reached" "$ALL")
	diag "$fp: $c kills"
	ok "killed at $fp" test "$c" -ge 5
done
like "$ALL" 'sched: [0-9]+ unfinished invoices \(.*, [1-9][0-9]* in doubt' \
	"restarts found SENDING records in doubt"
c=$(grep -Ec 'in doubt' "$ALL")
diag "'in doubt' lines: $c"
ok "in-doubt sends seen" test "$c" -ge 1
like "$ALL" 'SENDING -> SUBMITTED: in doubt; KSeF has it' \
	"in doubt sends KSeF had were resolved by its list"
like "$ALL" 'in doubt, and KSeF does not (have it|know its session)' \
	"in doubt sends KSeF did not have were sent again"
unlike "$ALL" 'AddressSanitizer|runtime error' "no sanitizer reports"
done_testing
