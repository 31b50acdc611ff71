#!/bin/sh
# reconcile.sh: reconciliation against ksef-sim.  An invoice pre-registered
# only in the simulator is reported as an orphan (and recorded); an invoice
# the simulator stops listing after its acceptance is reported missing; a
# run's summary is readable at GET /v1/reconcile/last; a second run does
# not report the known orphan again; an invoice whose processing is slow
# (processing delay 4 s, reconcile.stuck_after 1 s) is reported stuck,
# looked at again, and completes once KSeF has processed it.
. "$top_srcdir/tests/lib.sh"
t_tmpdir
. "$top_srcdir/tests/faults_lib.sh"
fl_setup

SOCK=$T_TMP/ksefd.sock
api() {
	_am=$1 _ap=$2
	shift 2
	curl -sS --unix-socket "$SOCK" -X "$_am" "$@" "http://ksefd$_ap"
}
# jget FILE KEY...: a value from a JSON file.
jget() {
	python3 -c 'import json, sys
v = json.load(open(sys.argv[1]))
for k in sys.argv[2:]:
    v = v[int(k)] if isinstance(v, list) else v[k]
print(v)' "$@"
}
# last_after MS: the last run's summary started at or after MS is there.
last_after() {
	api GET /v1/reconcile/last -o "$T_TMP/last.json" -w '%{http_code}' \
	    >"$T_TMP/last.code" 2>/dev/null &&
	    [ "$(cat "$T_TMP/last.code")" = 200 ] &&
	    [ "$(jget "$T_TMP/last.json" started_ms)" -ge "$1" ]
}
now_ms() { python3 -c 'import time; print(int(time.time() * 1000))'; }

ok "simulator starts" fl_sim_start --limits off --processing-delay 100ms \
    --auth-delay 0
# No client-side limits: status polls every 200 ms would reach the official
# session-invoice-list limit within seconds, and a run per poll of the stuck
# check the metadata limit (20 an hour).
fl_conf "$T_TMP/ksefd.conf" "[reconcile]
stuck_after = 1s
[limits]
enabled = no"
ok "ksefd starts" ksefd_start -f "$T_TMP/ksefd.conf"

code=$(api GET /v1/reconcile/last -o /dev/null -w '%{http_code}')
is "$code" 404 "before the first run: no summary (404)"

# 1. One invoice through the pipeline; then KSeF "loses" it.
ok "one invoice posted" fl_post REC 1
ok "it is DONE" wait_until 20 fl_done_is 1
fl_sim GET invoices >"$T_TMP/sim1.json"
KNUM=$(jget "$T_TMP/sim1.json" invoices 0 ksefNumber)
ok "the simulator has it ($KNUM)" test -n "$KNUM"
code=$(fl_sim DELETE "invoices/$KNUM" -o /dev/null -w '%{http_code}')
is "$code" 200 "the simulator stops listing it"
code=$(fl_sim DELETE "invoices/$KNUM" -o /dev/null -w '%{http_code}')
is "$code" 404 "a second removal: 404"

# 2. An invoice only the simulator knows.
sed 's#<P_2>[^<]*</P_2>#<P_2>ORPHAN/1</P_2>#' "$FL_TEMPLATE" >"$T_TMP/orphan.xml"
fl_sim POST invoices -H 'Content-Type: application/xml' \
    --data-binary "@$T_TMP/orphan.xml" >"$T_TMP/orphan.json"
ONUM=$(jget "$T_TMP/orphan.json" ksefNumber)
ok "an invoice pre-registered in the simulator only ($ONUM)" test -n "$ONUM"

# 3. A run on demand.
T0=$(now_ms)
code=$(api POST /v1/reconcile -o "$T_TMP/run.json" -w '%{http_code}')
is "$code" 202 "POST /v1/reconcile starts a run (202)"
ok "the run finishes" wait_until 20 last_after "$T0"
cp "$T_TMP/last.json" "$T_TMP/run1.json"
is "$(jget "$T_TMP/run1.json" counts orphan)" 1 "one orphan"
is "$(jget "$T_TMP/run1.json" counts missing)" 1 "one missing"
is "$(jget "$T_TMP/run1.json" counts mismatch)" 0 "no mismatch"
is "$(jget "$T_TMP/run1.json" windows 0 nip)" "$FL_NIP" "the window of the context"
is "$(jget "$T_TMP/run1.json" windows 0 error)" None "the query worked"
ok "the window is covered in pages" test "$(jget "$T_TMP/run1.json" windows 0 pages)" -ge 1
ok "the duration is there" test "$(jget "$T_TMP/run1.json" duration_ms)" -ge 0
like "$KSEFD_LOG" "reconcile: orphan: $FL_NIP -: KSeF number $ONUM" \
    "the orphan is logged with its KSeF number"
like "$KSEFD_LOG" "reconcile: missing: $FL_NIP [0-9a-f]{16}: KSeF number $KNUM is not listed" \
    "the missing invoice is logged with its KSeF number"
like "$KSEFD_LOG" "alert: reconcile orphan: $FL_NIP" "an alert for the orphan"
like "$KSEFD_LOG" "alert: reconcile missing: $FL_NIP" "an alert for the missing invoice"
"$KSEFCTL" -s "$SOCK" reconcile --last >"$T_TMP/ctl-last.out"
is "$?" 0 "ksefctl reconcile --last exits 0"
like "$T_TMP/ctl-last.out" '^orphan: 1$' "and prints the orphan count"
like "$T_TMP/ctl-last.out" '^missing: 1$' "and the missing count"
like "$T_TMP/ctl-last.out" "^window: $FL_NIP .* 1 page" "and the window"
"$KSEFCTL" -s "$SOCK" -j reconcile --last >"$T_TMP/ctl-last.json"
is "$(jget "$T_TMP/ctl-last.json" counts orphan)" 1 "-j: the JSON summary"
"$KSEFCTL" -s "$SOCK" reconcile --since 2026-13-01 >/dev/null 2>"$T_TMP/ctl-bad.err"
is "$?" 2 "reconcile --since with a bad date exits 2"
like "$T_TMP/ctl-bad.err" "not a date" "and says why"
"$KSEFCTL" -s "$SOCK" reconcile --last --since 2026-01-01 >/dev/null 2>&1
is "$?" 2 "--last with --since: usage"

# 4. Again: the orphan is known (recorded), the window starts at the last point.
T1=$(now_ms)
"$KSEFCTL" -s "$SOCK" reconcile --since "$(date -u +%Y-%m-%d)" >"$T_TMP/ctl-run.out"
is "$?" 0 "ksefctl reconcile --since TODAY exits 0"
like "$T_TMP/ctl-run.out" "reconciliation started" "and says the run started"
ok "and finishes" wait_until 20 last_after "$T1"
is "$(jget "$T_TMP/last.json" counts orphan)" 0 "the known orphan is not reported again"
n=$(grep -c "reconcile: orphan: " "$KSEFD_LOG")
is "$n" 1 "one orphan line in the log in all"
code=$(api POST '/v1/reconcile?since=abc' -o /dev/null -w '%{http_code}')
is "$code" 400 "since=abc: 400"
code=$(api GET /v1/reconcile -o /dev/null -w '%{http_code}')
is "$code" 405 "GET /v1/reconcile: 405"

# 5. Slow processing: stuck, reported, completed.
ok "processing delay 4 s" fl_sim_faults '{"processingDelay":"4s"}'
ok "one more invoice posted" fl_post STUCK 1
submitted_one() { [ "$(fl_count SUBMITTED)" -eq 1 ]; }
ok "it is SUBMITTED" wait_until 10 submitted_one
stuck_seen() {
	api POST /v1/reconcile -o /dev/null 2>/dev/null
	grep -q "reconcile: stuck: $FL_NIP" "$KSEFD_LOG"
}
ok "it is reported stuck" wait_until 10 stuck_seen
like "$KSEFD_LOG" "reconcile: stuck: $FL_NIP [0-9a-f]{16}: SUBMITTED for [0-9]+ s; looked at again" \
    "the stuck line says it was looked at again"
like "$KSEFD_LOG" "alert: reconcile stuck: $FL_NIP" "an alert for the stuck invoice"
ok "it completes once KSeF processed it" wait_until 20 fl_done_is 2
ok "no reconciliation is left running" wait_until 10 sh -c \
    "curl -s --unix-socket '$SOCK' -X POST -o /dev/null -w '%{http_code}' http://ksefd/v1/reconcile | grep -q 202"

# 6. A shutdown while a metadata query hangs: no leak, no crash, exit 0.
ok "metadata queries hang" fl_sim_faults '{"clear":true,"rules":[{"group":"invoiceMetadata","kind":"hang"}]}'
code=$(api POST /v1/reconcile -o /dev/null -w '%{http_code}')
is "$code" 202 "a run starts"
ok "its query reached the simulator" wait_until 10 sh -c \
    "[ \"\$(curl -sS --cacert '$T_TMP/tls/ca.crt' '$FL_SIM_ROOT/_sim/stats' | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"faults\"][\"hang\"])')\" -ge 1 ]"
code=$(api POST /v1/reconcile -o /dev/null -w '%{http_code}')
is "$code" 409 "while it runs another is refused (409)"
ok "ksefd stops" ksefd_stop TERM
is "$KSEFD_STATUS" 0 "ksefd exits with status 0"
done_testing
