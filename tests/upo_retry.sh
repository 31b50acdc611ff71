#!/bin/sh
# upo_retry.sh: GET /v1/invoices/{id}/upo with ksefctl upo, against the
# simulator; POST /v1/invoices/{id}/retry with ksefctl retry.
. "$top_srcdir/tests/lib.sh"

t_tmpdir
SB=$T_TMP/sb
CTL="$KSEFCTL"
TEMPLATE=$top_srcdir/tests/data/valid/fa3-csharp-invoice-template-fa-3.xml

# 1. A UPO from the simulator, through the whole pipeline.
KSEFD_BUILD=$top_builddir SIM_ARGS="--processing-delay 0" \
    "$top_srcdir/scripts/sandbox" start "$SB" >"$T_TMP/sb.env" 2>"$T_TMP/sb.err" ||
    { cat "$T_TMP/sb.err" | sed 's/^/# /'; bail "sandbox did not start"; }
trap '"$top_srcdir/scripts/sandbox" stop "$SB" >/dev/null 2>&1; t_cleanup' EXIT
. "$T_TMP/sb.env"
sed 's#<P_2>[^<]*</P_2>#<P_2>UPO/1</P_2>#' "$TEMPLATE" >"$T_TMP/inv.xml"
"$CTL" -s "$KSEFD_SOCKET" -j submit "$T_TMP/inv.xml" >"$T_TMP/sub.json"
ID=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["invoice"]["id"])' "$T_TMP/sub.json")
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
"$CTL" -s "$KSEFD_SOCKET" retry "$ID" >"$T_TMP/retry-done.out" 2>&1
is "$?" 1 "retry of a DONE invoice exits 1"
like "$T_TMP/retry-done.out" 'only a FAILED invoice' "and says why"
"$top_srcdir/scripts/sandbox" stop "$SB" >/dev/null 2>&1
trap t_cleanup EXIT

# 2. retry: an invoice that expired (retry.max_age) while KSeF was unreachable.
ksefd_conf "$T_TMP/r.conf" "$T_TMP/rdb"
t_secret "$T_TMP/tokens/5265877635"
cat >>"$T_TMP/r.conf" <<EOF2
[retry]
max_age = 1ms
[intake]
future_tolerance = 1d
[context 5265877635]
token_file = $T_TMP/tokens/5265877635
EOF2
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
done_testing
