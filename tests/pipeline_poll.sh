#!/bin/sh
# pipeline_poll.sh: how ksefd learns what became of the invoices it sent,
# against ksef-sim (one context, one session for the whole run):
#  1. few pending (at most poll.single_max): one GET .../invoices/{ref}
#     each, never the session's invoice list; all DONE;
#  2. many pending: the session's invoice list (listing rounds);
#  3. a long session (2010 invoices, then batches of 60 while the simulator
#     takes 1 s over each): listing rounds resume where the last one saw an
#     invoice pending instead of reading the list from the top, so the
#     simulator serves far fewer list entries than rounds from the top would
#     read (ksefd's sched trace counts the rounds); every 8th round still
#     starts at the top, and so does the round after a failed page;
#  4. few pending, but the invoice_status limits have no room for them all:
#     the list again.
# In-doubt resolution over whole lists: pipeline_faults.sh, pipeline_crash.sh.
. "$top_srcdir/tests/lib.sh"
t_tmpdir
. "$top_srcdir/tests/faults_lib.sh"
fl_setup

FL_TRACE=sched
ok "simulator starts (1 s processing)" fl_sim_start --limits off \
    --processing-delay 1s --auth-delay 0
fl_conf "$T_TMP/ksefd.conf" "[session]
idle_timeout = 1h
[limits]
enabled = no"
sed -i '/^\[poll\]/a single_max = 10' "$T_TMP/ksefd.conf"
ok "ksefd starts" ksefd_start -f "$T_TMP/ksefd.conf"

# req GROUP: requests of GROUP the simulator has served.
req() {
	fl_stat requests "$1"
}

# rounds_since LINE [KIND]: listing rounds ksefd started after log line LINE
# (KIND: "from the top" or "resumed"; both when not given).
rounds_since() {
	tail -n "+$(($1 + 1))" "$KSEFD_LOG" |
	    grep -c "listing round [0-9]* ${2:-}"
}

# --- 1. few pending: one status request each ---------------------------------

ok "5 invoices accepted" fl_post FEW 5
ok "all 5 DONE" wait_until 30 fl_done_is 5
st1=$(req invoiceStatus) li1=$(req sessionInvoiceList)
diag "invoiceStatus $st1, sessionInvoiceList $li1"
ok "few pending: statuses asked one by one" test "$st1" -ge 5
is "$li1" 0 "few pending: the session's invoice list was never read"
like "$KSEFD_LOG" 'invoice statuses asked one by one' "ksefd traced it"

# --- 2. many pending: the list ------------------------------------------------

lines=$(wc -l <"$KSEFD_LOG")
ok "40 more invoices accepted" fl_post MANY 40
ok "all 45 DONE" wait_until 30 fl_done_is 45
li2=$(req sessionInvoiceList)
diag "sessionInvoiceList $li1 -> $li2"
ok "many pending: the session's invoice list was read" test "$li2" -gt "$li1"
ok "many pending: in listing rounds" test "$(rounds_since "$lines")" -gt 0

# --- 3. a long session: rounds resume ------------------------------------------

ok "no processing delay while the session fills" \
    fl_sim_faults '{"processingDelay":0}'
ok "1965 more invoices accepted (2010 in the session)" fl_post LONG 1965
ok "all 2010 DONE" wait_until 120 fl_done_is 2010
ok "1 s processing again" fl_sim_faults '{"processingDelay":"1s"}'
size=2010
listed0=$(fl_stat listedInvoices)
lines=$(wc -l <"$KSEFD_LOG")
b=0
while [ $b -lt 5 ]; do
	b=$((b + 1))
	size=$((size + 60))
	ok "batch $b: 60 invoices accepted" fl_post "B$b-" 60
	ok "batch $b: all $size DONE" wait_until 30 fl_done_is $size
done
listed=$(($(fl_stat listedInvoices) - listed0))
rounds=$(rounds_since "$lines")
top=$(rounds_since "$lines" "from the top")
# Each round from the top would have read at least the 2010 invoices the
# session held before the batches.
diag "$rounds listing rounds ($top from the top) served $listed list entries; from the top: >= $((rounds * 2010))"
ok "several listing rounds during the batches" test "$rounds" -ge 5
ok "resumed rounds read under a third of what rounds from the top would" \
    test $((listed * 3)) -lt $((rounds * 2010))
ok "every 8th round starts at the top" test "$top" -ge $((rounds / 8))

# Failed pages: the round after each starts from the top.
lines=$(wc -l <"$KSEFD_LOG")
ok "three 500s on the invoice list armed" fl_sim_faults \
    '{"rules":[{"group":"sessionInvoiceList","kind":"500","every":2,"count":3}]}'
size=$((size + 60))
ok "batch 6: 60 invoices accepted" fl_post B6- 60
ok "batch 6: all $size DONE" wait_until 30 fl_done_is $size
tail -n "+$((lines + 1))" "$KSEFD_LOG" | awk '
/list page failed/ { f = 1; next }
f && /listing round/ { f = 0; n++; if ($0 ~ /from the top/) top++ }
END { print n + 0, top + 0 }' >"$T_TMP/after"
diag "rounds after a failed page, and of them from the top: $(cat "$T_TMP/after")"
ok "rounds followed failed pages" test "$(cut -d' ' -f1 "$T_TMP/after")" -ge 2
ok "each started from the top" \
    test "$(cut -d' ' -f1 "$T_TMP/after")" = "$(cut -d' ' -f2 "$T_TMP/after")"

# --- 4. few pending, but no room in the invoice_status limits: the list ------

lines=$(wc -l <"$KSEFD_LOG")
sed -i 's/^enabled = no$/enabled = yes\nwindows = 1s 1s 1s\ninvoice_status = 2 - -/' \
    "$T_TMP/ksefd.conf"
kill -HUP "$KSEFD_PID"
reloaded() {
	tail -n "+$((lines + 1))" "$KSEFD_LOG" | grep -q "reloaded configuration"
}
ok "reloaded: limits on, invoice_status 2 a second" wait_until 10 reloaded
st1=$(req invoiceStatus) li1=$(req sessionInvoiceList)
size=$((size + 5))
ok "5 more invoices accepted" fl_post TIGHT 5
ok "all $size DONE" wait_until 30 fl_done_is $size
st2=$(req invoiceStatus) li2=$(req sessionInvoiceList)
diag "invoiceStatus $st1 -> $st2, sessionInvoiceList $li1 -> $li2"
is "$st2" "$st1" "no room for 5 statuses: none asked one by one"
ok "the session's invoice list instead" test "$li2" -gt "$li1"

ok "the simulator registered each invoice exactly once" fl_exactly_once $size
unlike "$KSEFD_LOG" 'AddressSanitizer|runtime error' "no sanitizer report"
ok "ksefd stops on TERM" ksefd_stop TERM
is "$KSEFD_STATUS" 0 "and exits 0"
done_testing
