#!/bin/sh
# ops.sh: operator commands against a running ksefd and ksef-sim: hold and
# release (a held invoice stays QUEUED while the others go DONE, then goes
# DONE once released; both in the audit trail), audit (--id, --since, and
# --follow seeing new events appear), reload through the API (a broken
# config reports its errors with file:line and changes nothing, a good one
# reports its changes).
. "$top_srcdir/tests/lib.sh"
t_tmpdir
. "$top_srcdir/tests/faults_lib.sh"

fl_setup

CONF=$T_TMP/ksefd.conf
SOCK=$T_TMP/ksefd.sock
ctl() {
	"$KSEFCTL" -s "$SOCK" "$@" >"$T_TMP/out" 2>"$T_TMP/err" </dev/null
	RC=$?
}
# state ID: the invoice's state.
state() {
	"$KSEFCTL" -s "$SOCK" -j show "$1" 2>/dev/null |
	    python3 -c 'import json, sys; print(json.load(sys.stdin)["state"])'
}

ok "simulator started" fl_sim_start
fl_conf "$CONF"
ok "ksefd started" ksefd_start -f "$CONF"

# --- hold / release ------------------------------------------------------

# Sends fail (503) until the faults are cleared: the invoices stay queued.
ok "sends fail with 503" fl_sim_faults \
    '{"rules":[{"group":"invoiceSend","kind":"503"}]}'
ok "5 invoices posted" fl_post H 5
"$KSEFCTL" -s "$SOCK" -j list --all >"$T_TMP/list" 2>&1
ID=$(python3 -c 'import json, sys
print(sorted(json.loads(l)["id"] for l in open(sys.argv[1]))[0])' "$T_TMP/list")
like "$T_TMP/list" "$ID" "an invoice id to hold: $ID"

ctl hold "$ID"
is "$RC" 0 "ksefctl hold exits 0"
like "$T_TMP/out" "^$ID: [A-Z]+ held\$" "ksefctl hold says held"
ctl -j show "$ID"
like "$T_TMP/out" '"hold": *true' "the record says hold"
ctl hold 0123
is "$RC" 2 "hold of a malformed id: usage error"
ctl hold "$(printf '%064d' 0)"
is "$RC" 1 "hold of an unknown id exits 1"
like "$T_TMP/err" 'no invoice with this id' "... and says it is unknown"

ok "faults cleared" fl_sim_faults '{"clear":true}'
ok "the other 4 invoices DONE" wait_until 30 fl_done_is 4
is "$(state "$ID")" QUEUED "the held invoice stays QUEUED"

# audit --follow in the background sees the release and the DONE.
ctl audit
is "$RC" 0 "ksefctl audit exits 0"
NEXT=$(python3 -c 'import json, sys
print(max(json.loads(l)["seq"] for l in open(sys.argv[1])) + 1)' "$T_TMP/out")
ok "audit lines are JSON" python3 -c 'import json, sys
[json.loads(l) for l in open(sys.argv[1])]' "$T_TMP/out"
timeout 30 "$KSEFCTL" -s "$SOCK" audit --follow --since "$NEXT" \
    >"$T_TMP/follow" 2>"$T_TMP/follow.err" &
FOLLOW=$!

ctl release "$ID"
is "$RC" 0 "ksefctl release exits 0"
like "$T_TMP/out" "^$ID: QUEUED released\$" "ksefctl release says released"
ok "the released invoice goes DONE" wait_until 30 sh -c \
    '[ "$("$1" -s "$2" -j show "$3" | grep -c "\"DONE\"")" -ge 1 ]' sh \
    "$KSEFCTL" "$SOCK" "$ID"
ok "all 5 DONE" fl_done_is 5
ok "each registered once" fl_exactly_once 5
ok "follow printed the release and the DONE" wait_until 10 python3 -c '
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1])]
mine = [e for e in ev if e["invoice"] == sys.argv[2]]
assert any(e["detail"] == "release requested" for e in mine)
assert any(e["to"] == "DONE" for e in mine)
assert all(e["seq"] >= int(sys.argv[3]) for e in ev)
' "$T_TMP/follow" "$ID" "$NEXT"
kill "$FOLLOW" 2>/dev/null
wait "$FOLLOW" 2>/dev/null

ctl audit --id "$ID"
is "$RC" 0 "audit --id exits 0"
python3 -c 'import json, sys
for l in open(sys.argv[1]):
    e = json.loads(l)
    print(e["invoice"] == sys.argv[2], e["from"], e["to"], e["detail"])' \
    "$T_TMP/out" "$ID" >"$T_TMP/mine"
unlike "$T_TMP/mine" '^False' "audit --id: only that invoice's events"
like "$T_TMP/mine" '^True (QUEUED QUEUED|SENDING SENDING) hold requested$' "a hold event, no state change"
like "$T_TMP/mine" '^True QUEUED QUEUED release requested$' "a release event"
like "$T_TMP/mine" '^True [A-Z]+ DONE' "and its DONE"
ctl audit --since 2000-01-01 --id "$ID"
is "$(wc -l <"$T_TMP/out")" "$(wc -l <"$T_TMP/mine")" "audit --since TIME: the same events"
ctl audit --since 2099-01-01T00:00:00Z
is "$RC:$(wc -l <"$T_TMP/out" | tr -d ' ')" "0:0" "audit --since a future time: none"
ctl audit --since yesterday
is "$RC" 2 "audit --since garbage: usage error"
ctl hold "$ID"
is "$RC" 1 "hold of a DONE invoice exits 1"
like "$T_TMP/err" 'DONE: a finished invoice cannot be held' "... and says why"

# --- reload --------------------------------------------------------------

cp "$CONF" "$CONF.good"
printf '[retry]\nbackoff_min = soon\n[nosuchsection]\n' >>"$CONF"
ctl reload
is "$RC" 1 "reload of a broken config exits 1"
like "$T_TMP/err" "$CONF:[0-9]+: .*backoff_min" "the error names file:line and the key"
like "$T_TMP/err" "keeps its old settings" "... and says nothing changed"
ctl -j reload
like "$T_TMP/out" '"ok": *false' "reload -j: ok false"
fl_conf "$CONF" '[alert]
syslog = no'
sed -i 's/^level = info$/level = debug/' "$CONF"
ctl reload
is "$RC" 0 "reload of a good config exits 0"
like "$T_TMP/out" '^reloaded: [0-9]+ change' "it reports reloaded"
like "$T_TMP/out" '^changed: log.level info -> debug' "and the changed level"
ok "ksefd logged it" wait_log "$KSEFD_LOG" 'reload requested through the API'
ctl reload
like "$T_TMP/out" '^reloaded: 0 changes' "reloading again: no changes"

ok "ksefd stops" ksefd_stop TERM
is "$KSEFD_STATUS" 0 "ksefd exit status 0"
done_testing
