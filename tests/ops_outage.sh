#!/bin/sh
# ops_outage.sh: outage awareness against ksef-sim.  Latarnia says FAILURE
# and everything answers 503: ksefd sees it in Latarnia, GET /v1/stats says
# so, and no invoice send reaches the simulator while it lasts (its
# invoiceSend count does not move across several Latarnia polls); after
# the end every invoice goes DONE, each registered once.
. "$top_srcdir/tests/lib.sh"
t_tmpdir
. "$top_srcdir/tests/faults_lib.sh"

fl_setup

CONF=$T_TMP/ksefd.conf
# stat EXPR: EXPR over ksefd's GET /v1/stats answer s.
stat() {
	curl -sS --unix-socket "$T_TMP/ksefd.sock" http://ksefd/v1/stats |
	    python3 -c 'import json, sys; s = json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"
}
sends() {
	fl_stat requests invoiceSend
}
latarnia_is() {
	[ "$(stat 's["outage"]["latarnia"]')" = "$1" ]
}
polls_at_least() {
	[ "$(stat 's["outage"]["polls"]')" -ge "$1" ]
}

# 35 sends in a few seconds: no rate limits on either side.  Alerts go to
# a file, an outage after 1 s.
EXTRA="[limits]
enabled = no
[alert]
syslog = no
command = cat >> $T_TMP/alerts.jsonl
outage_after = 1s"
ok "simulator started" fl_sim_start --limits off
fl_conf "$CONF" "$EXTRA"
ok "ksefd started" ksefd_start -f "$CONF"
ok "ksefd asked Latarnia: AVAILABLE" wait_until 10 latarnia_is AVAILABLE
is "$(stat 's["outage"]["paused"]')" False "not paused"
ok "10 invoices before the outage" fl_post A 10
ok "... DONE" wait_until 30 fl_done_is 10

ok "Latarnia FAILURE" fl_sim_faults '{"latarnia":"FAILURE"}'
ok "ksefd sees the outage" wait_until 10 latarnia_is FAILURE
is "$(stat 's["outage"]["paused"]')" True "stats: paused"
like "$KSEFD_LOG" 'KSeF is unavailable: sending paused' "ksefd logs the pause"
ok "and KSeF answers 503 to everything" fl_sim_faults '{"outage":"120s"}'
before=$(sends)
ok "the simulator counts invoice sends ($before)" test "$before" -ge 10
ok "20 invoices during the outage" fl_post B 20
polls=$(stat 's["outage"]["polls"]')
ok "five more Latarnia polls go by" wait_until 20 polls_at_least $((polls + 5))
is "$(sends)" "$before" "the simulator saw no invoice send during the outage"
is "$(fl_count QUEUED)" 20 "the 20 stay QUEUED"

ok "an outage alert" wait_until 10 grep -q '"outage"' "$T_TMP/alerts.jsonl"
ok "the outage ends" fl_sim_faults '{"outage":false,"latarnia":null}'
ok "ksefd sees the end" wait_until 10 latarnia_is AVAILABLE
is "$(stat 's["outage"]["paused"]')" False "stats: not paused"
ok "all 30 DONE" wait_until 60 fl_done_is 30
ok "each registered once" fl_exactly_once 30
like "$KSEFD_LOG" 'available again: sending resumes' "ksefd logs the resumption"

# An unreachable Latarnia is unknown, not an outage.
fl_conf "$CONF" "$EXTRA"
sed -i "s|^latarnia_url = .*|latarnia_url = http://127.0.0.1:9/latarnia|" "$CONF"
ok "reload to an unreachable Latarnia" kill -HUP "$KSEFD_PID"
ok "its status is unknown" wait_until 10 latarnia_is unknown
ok "it was asked" wait_until 10 sh -c '[ "$(curl -sS --unix-socket "$1" http://ksefd/v1/stats |
    python3 -c "import json, sys; print(json.load(sys.stdin)[\"outage\"][\"errors\"])")" -ge 1 ]' sh "$T_TMP/ksefd.sock"
ok "sending goes on: 5 more DONE" fl_post C 5
ok "... DONE" wait_until 30 fl_done_is 35

ok "ksefd stops" ksefd_stop TERM
is "$KSEFD_STATUS" 0 "ksefd exit status 0"
done_testing
