#!/bin/sh
# upo_retry.sh: GET /v1/invoices/{id}/upo with ksefctl upo, against the
# simulator; POST /v1/invoices/{id}/retry with ksefctl retry.
. "$top_srcdir/tests/lib.sh"

t_tmpdir
SB=$T_TMP/sb
CTL="$KSEFCTL"
TEMPLATE=$top_srcdir/tests/data/valid/fa3-csharp-invoice-template-fa-3.xml

# sb_start SIM_ARGS: simulator and ksefd in $SB (its variables loaded).
sb_start() {
	rm -rf "$SB"
	KSEFD_BUILD=$top_builddir SIM_ARGS="$1" \
	    "$top_srcdir/scripts/sandbox" start "$SB" >"$T_TMP/sb.env" 2>"$T_TMP/sb.err" ||
	    { cat "$T_TMP/sb.err" | sed 's/^/# /'; bail "sandbox did not start"; }
	trap '"$top_srcdir/scripts/sandbox" stop "$SB" >/dev/null 2>&1; t_cleanup' EXIT
	. "$T_TMP/sb.env"
}
# sb_submit NUMBER OUT: submit the template numbered NUMBER; print its id.
sb_submit() {
	sed "s#<P_2>[^<]*</P_2>#<P_2>$1</P_2>#" "$TEMPLATE" >"$2"
	"$CTL" -s "$KSEFD_SOCKET" -j submit "$2" |
	    python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["invoice"]["id"])'
}

# 1. A UPO from the simulator, through the whole pipeline.
sb_start "--processing-delay 0"
ID=$(sb_submit UPO/1 "$T_TMP/inv.xml")
ok "submitted ($ID)" test -n "$ID"
"$CTL" -s "$KSEFD_SOCKET" upo "$ID" >"$T_TMP/early.out" 2>&1
early=$?
state() { "$CTL" -s "$KSEFD_SOCKET" -j show "$ID" | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])'; }
wait_until 30 sh -c "[ \"\$('$CTL' -s '$KSEFD_SOCKET' -j show $ID | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"state\"])')\" = DONE ]"
is "$(state)" DONE "the invoice reached DONE"
if [ "$early" -ne 0 ]; then
	like "$T_TMP/early.out" 'no UPO yet' "before DONE: upo says there is none yet"
fi
"$CTL" -s "$KSEFD_SOCKET" upo "$ID" >"$T_TMP/upo.xml"
is "$?" 0 "ksefctl upo exits 0"
KNUM=$("$CTL" -s "$KSEFD_SOCKET" -j show "$ID" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ksef_number"])')
HASH=$(openssl dgst -sha256 -binary "$T_TMP/inv.xml" | openssl base64 -A)
like "$T_TMP/upo.xml" "$KNUM" "the UPO names the KSeF number ($KNUM)"
like "$T_TMP/upo.xml" "$(printf '%s' "$HASH" | sed 's/[+/]/./g')" "the UPO names the invoice hash"
ok "the UPO is well-formed XML" xmllint --noout "$T_TMP/upo.xml"
"$CTL" -s "$KSEFD_SOCKET" upo "$ID" -o "$T_TMP/upo2.xml"
ok "upo -o writes the same bytes" cmp -s "$T_TMP/upo.xml" "$T_TMP/upo2.xml"
"$CTL" -s "$KSEFD_SOCKET" upo "$(printf '%064d' 0)" >/dev/null 2>&1
is "$?" 1 "upo of an unknown id exits 1"
# The UPO came at the first try: ACCEPTED and DONE went to the store in one
# write, and the audit trail still has both steps, in order.
AUDIT_STEPS='import json,sys
print(" ".join("%s>%s" % (e["from"], e["to"]) for e in map(json.loads, sys.stdin)))'
"$CTL" -s "$KSEFD_SOCKET" audit --id "$ID" | python3 -c "$AUDIT_STEPS" >"$T_TMP/steps"
like "$T_TMP/steps" 'SENDING>SUBMITTED SUBMITTED>ACCEPTED ACCEPTED>DONE$' \
    "audit: SUBMITTED -> ACCEPTED -> DONE"
SHORT=${ID%${ID#????????????????}}
like "$KSEFD_LOG" "$SHORT SUBMITTED -> ACCEPTED -> DONE: KSeF number $KNUM; UPO stored" \
    "the UPO at the first try: ACCEPTED written with DONE"
unlike "$KSEFD_LOG" "$SHORT SUBMITTED -> ACCEPTED: " "so not on its own"
"$CTL" -s "$KSEFD_SOCKET" retry "$ID" >"$T_TMP/retry-done.out" 2>&1
is "$?" 1 "retry of a DONE invoice exits 1"
like "$T_TMP/retry-done.out" 'only a FAILED invoice' "and says why"
"$top_srcdir/scripts/sandbox" stop "$SB" >/dev/null 2>&1
trap t_cleanup EXIT

# 1b. The first download of the UPO through its presigned link fails (a
# 500 from the storage): ACCEPTED is written on its own, then the UPO comes
# from the UPO endpoint and the invoice is DONE.
sb_start "--processing-delay 0 --fault storage:500:every=1:count=1"
ID2=$(sb_submit UPO/2 "$T_TMP/inv2.xml")
ok "submitted ($ID2)" test -n "$ID2"
wait_until 30 sh -c "'$CTL' -s '$KSEFD_SOCKET' -j show $ID2 | grep -q '\"DONE\"'"
"$CTL" -s "$KSEFD_SOCKET" -j show "$ID2" >"$T_TMP/show2.json"
like "$T_TMP/show2.json" '"state": *"DONE"' "failed download: DONE through the UPO endpoint"
SHORT2=${ID2%${ID2#????????????????}}
like "$KSEFD_LOG" "$SHORT2 SUBMITTED -> ACCEPTED: KSeF number " \
    "the first UPO attempt failed: ACCEPTED written on its own"
like "$KSEFD_LOG" "$SHORT2 ACCEPTED -> DONE: UPO stored" "then DONE"
"$CTL" -s "$KSEFD_SOCKET" audit --id "$ID2" | python3 -c "$AUDIT_STEPS" >"$T_TMP/steps2"
like "$T_TMP/steps2" 'SENDING>SUBMITTED SUBMITTED>ACCEPTED ACCEPTED>DONE$' \
    "audit: the same steps"
"$CTL" -s "$KSEFD_SOCKET" upo "$ID2" >"$T_TMP/upo2b.xml"
like "$T_TMP/upo2b.xml" "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ksef_number"])' "$T_TMP/show2.json")" \
    "its UPO names its KSeF number"
"$top_srcdir/scripts/sandbox" stop "$SB" >/dev/null 2>&1
trap t_cleanup EXIT

# 2. retry: an invoice that expired (retry.max_age) while KSeF was unreachable.
# unreachable_conf FILE DB RETRY-LINES: ksefd with KSeF unreachable.
unreachable_conf() {
	ksefd_conf "$1" "$2"
	t_secret "$T_TMP/tokens/5265877635"
	printf '[retry]\n%b\n[intake]\nfuture_tolerance = 1d\n' "$3" >>"$1"
	printf '[context 5265877635]\ntoken_file = %s\n' \
	    "$T_TMP/tokens/5265877635" >>"$1"
}
unreachable_conf "$T_TMP/r.conf" "$T_TMP/rdb" "max_age = 1ms"
ok "ksefd starts" ksefd_start -f "$T_TMP/r.conf"
SOCK=$T_TMP/ksefd.sock
sed 's#<P_2>[^<]*</P_2>#<P_2>RETRY/1</P_2>#' "$TEMPLATE" >"$T_TMP/r.xml"
"$CTL" -s "$SOCK" -j submit "$T_TMP/r.xml" >"$T_TMP/rsub.json"
RID=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["invoice"]["id"])' "$T_TMP/rsub.json")
rstate() { "$CTL" -s "$SOCK" -j show "$RID" | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])'; }
wait_until 20 sh -c "'$CTL' -s '$SOCK' -j show $RID | grep -q '\"FAILED\"'"
is "$(rstate)" FAILED "past retry.max_age: FAILED"
"$CTL" -s "$SOCK" -j show "$RID" >"$T_TMP/rshow.json"
like "$T_TMP/rshow.json" 'expired' "with the reason"
like "$KSEFD_LOG" "alert: invoice ${RID%${RID#????????????????}} of 5265877635 FAILED" "an alert for the FAILED invoice"
"$CTL" -s "$SOCK" retry "$RID" >"$T_TMP/retry.out"
is "$?" 0 "ksefctl retry exits 0"
like "$T_TMP/retry.out" "$RID: QUEUED" "retry puts it back in the queue"
like "$KSEFD_LOG" 'FAILED -> QUEUED: retry requested' "the retry is in the log"
# It expires again (max_age 1ms); then every FAILED one at once.
wait_until 20 sh -c "'$CTL' -s '$SOCK' -j show $RID | grep -q '\"FAILED\"'"
"$CTL" -s "$SOCK" retry --state FAILED >"$T_TMP/retry-all.out"
is "$?" 0 "ksefctl retry --state FAILED exits 0"
like "$T_TMP/retry-all.out" "^$RID: QUEUED" "it retried the FAILED invoice"
like "$T_TMP/retry-all.out" '^1 retried, 0 not retried$' "and says how many"
"$CTL" -s "$SOCK" retry --state DONE >/dev/null 2>&1
is "$?" 2 "retry --state of another state: usage error"
ok "ksefd stops" ksefd_stop TERM

# expect_expired SOCK ID WAIT LIMIT WHAT: within WAIT seconds the invoice is
# FAILED, having expired unsent, and it took less than LIMIT.
expect_expired() {
	_t0=$(date +%s)
	wait_until "$3" sh -c "'$CTL' -s '$1' -j show $2 | grep -q '\"FAILED\"'"
	_t1=$(date +%s)
	"$CTL" -s "$1" -j show "$2" >"$T_TMP/expired.json"
	like "$T_TMP/expired.json" '"state": *"FAILED"' "FAILED at its max_age, $5"
	like "$T_TMP/expired.json" 'expired' "expired, not sent"
	ok "within $4 s ($((_t1 - _t0)) s)" test $((_t1 - _t0)) -lt "$4"
}

# 2b. It expires on time although nothing else wakes the scheduler: KSeF
# unreachable and its next authentication a minute away.
unreachable_conf "$T_TMP/e.conf" "$T_TMP/edb" \
    "max_age = 2s\nbackoff_min = 60s\nbackoff_max = 60s"
ok "ksefd starts (retry.max_age 2s, backoff 60s)" ksefd_start -f "$T_TMP/e.conf"
sed 's#<P_2>[^<]*</P_2>#<P_2>EXPIRE/1</P_2>#' "$TEMPLATE" >"$T_TMP/e.xml"
EID=$("$CTL" -s "$SOCK" -j submit "$T_TMP/e.xml" |
    python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["invoice"]["id"])')
expect_expired "$SOCK" "$EID" 12 10 "not at the next authentication"
ok "ksefd stops" ksefd_stop TERM

# 3. It expires on time while KSeF's limits are being fetched (the fetch
# hangs until ksef.request_timeout, 10 s in the sandbox).
KSEFD_CONF_EXTRA="[retry]\nmax_age = 2s"
export KSEFD_CONF_EXTRA
sb_start "--processing-delay 0 --fault other:hang:every=1"
unset KSEFD_CONF_EXTRA
wait_until 10 grep -q 'authenticated' "$KSEFD_LOG"
LID=$(sb_submit EXPIRE/2 "$T_TMP/l.xml")
expect_expired "$KSEFD_SOCKET" "$LID" 9 8 "while the limits fetch hangs (it times out at 10 s)"
"$top_srcdir/scripts/sandbox" stop "$SB" >/dev/null 2>&1
trap t_cleanup EXIT
done_testing
