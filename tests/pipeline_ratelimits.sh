#!/bin/sh
# pipeline_ratelimits.sh: ksefd takes the limits KSeF reports (GET
# /rate-limits) in place of the official defaults, per context, while a
# [limits] override in its config still wins.  ksef-sim enforces a LOWER
# invoiceSend limit than the official one (3/s, 6 per scaled minute, 100 per
# scaled hour; windows 1s,2s,20s in both); ksefd's config has the official
# defaults only.  Without the refresh ksefd would send 10 in the first second
# and the simulator would answer 429s; with it: the fetched values in the log,
# every window of the sends within them, zero 429s.  A reload keeps the
# fetched values (no new fetch for an hour).  Then an override of 2/s: the
# sends never reach KSeF's 3 in a second, so the override is what ran.
. "$top_srcdir/tests/lib.sh"
t_tmpdir
. "$top_srcdir/tests/faults_lib.sh"
fl_setup

N1=30			# with KSeF's limits
N2=12			# after a reload
N3=12			# with a config override
WINDOWS="1s 2s 20s"

cat >"$T_TMP/limits.json" <<'EOF'
{"invoiceSend": {"perSecond": 3, "perMinute": 6, "perHour": 100}}
EOF

# sends_check FILE LIMITS: the invoice sends the simulator took since the
# line count in $T_TMP/sends.from, "PER_S PER_2S PER_20S"; prints the most
# in any window and OVER where one is exceeded, FULL when the 1 s window
# reached its limit at least once.
sends_check() {
	fl_sends "$T_TMP/sends-all.txt"
	tail -n "+$(($(cat "$T_TMP/sends.from") + 1))" "$T_TMP/sends-all.txt" |
	    python3 -c '
import sys
lim = [int(x) for x in sys.argv[1].split()]
t = [int(l.split()[0]) for l in sys.stdin if l.split()[1] == "202"]
print("sends", len(t))
for w, m in zip((1000, 2000, 20000), lim):
    j, most = 0, 0
    for i in range(len(t)):
        while t[i] - t[j] >= w:
            j += 1
        most = max(most, i - j + 1)
    print("window %d ms: at most %d (limit %d)%s%s" % (w, most, m,
          " OVER" if most > m else "", " FULL" if w == 1000 and most == m else ""))
' "$2" >"$1"
	diag "$(cat "$1")"
}

sends_mark() {
	fl_sends "$T_TMP/sends-all.txt"
	wc -l <"$T_TMP/sends-all.txt" >"$T_TMP/sends.from"
}

ok "simulator starts with invoiceSend limited to 3/s 6/min 100/h, windows 1s,2s,20s" \
    fl_sim_start --limits "$T_TMP/limits.json" --limit-windows 1s,2s,20s \
    --processing-delay 50ms --auth-delay 0
fl_conf "$T_TMP/ksefd.conf" "[limits]
enabled = yes
windows = $WINDOWS"
ok "ksefd starts with the official limits (no override)" \
    ksefd_start -f "$T_TMP/ksefd.conf"
sends_mark

ok "$N1 invoices accepted" fl_post RL $N1
ok "ksefd logged KSeF's invoice_send limits" wait_log "$KSEFD_LOG" \
    'sched: context 5265877635: KSeF limits invoice_send to 3/s 6/min 100/h \(official 10/s 30/min 180/h\)$' 20
unlike "$KSEFD_LOG" 'KSeF limits (online_session|other|session_misc) ' \
    "groups KSeF reports at their official values are not logged"
ok "all $N1 invoices DONE" wait_until 40 fl_done_is $N1
sends_check "$T_TMP/rate1.txt" "3 6 100"
like "$T_TMP/rate1.txt" "^sends $N1\$" "the simulator took $N1 sends"
unlike "$T_TMP/rate1.txt" 'OVER' "no window held more sends than KSeF's limits"
like "$T_TMP/rate1.txt" 'FULL' "and the 1 s window was used up to KSeF's 3"
is "$(fl_stat responses429)" 0 "the simulator answered no 429"

# A reload (same config) keeps what KSeF reported: no fetch, still 3/s.
_from=$(($(wc -l <"$KSEFD_LOG") + 1))
kill -HUP "$KSEFD_PID"
ok "ksefd reloads" wait_until 10 sh -c 'tail -n "+$2" "$1" |
    grep -q "conf: reloaded configuration"' sh "$KSEFD_LOG" "$_from"
sends_mark
ok "$N2 more invoices accepted after the reload" fl_post RLH $N2
ok "all $((N1 + N2)) invoices DONE" wait_until 40 fl_done_is $((N1 + N2))
sends_check "$T_TMP/rate2.txt" "3 6 100"
unlike "$T_TMP/rate2.txt" 'OVER' "after the reload no window held more than KSeF's limits"
is "$(fl_stat responses429)" 0 "the simulator still answered no 429"
ok "ksefd stops on TERM" ksefd_stop TERM
is "$KSEFD_STATUS" 0 "and exits 0"

# An override stricter than KSeF's value wins: 2 per second, never 3.
fl_conf "$T_TMP/ksefd.conf" "[limits]
enabled = yes
windows = $WINDOWS
invoice_send = 2 4 100"
ok "ksefd restarts with invoice_send = 2 4 100 in [limits]" \
    ksefd_start -f "$T_TMP/ksefd.conf"
sends_mark
ok "$N3 invoices accepted" fl_post RLO $N3
ok "ksefd logged that the override wins over KSeF's value" wait_log \
    "$KSEFD_LOG" 'KSeF limits invoice_send to 3/s 6/min 100/h \(official 10/s 30/min 180/h\); the \[limits\] override wins$' 20
ok "all $((N1 + N2 + N3)) invoices DONE" wait_until 40 fl_done_is $((N1 + N2 + N3))
sends_check "$T_TMP/rate3.txt" "2 4 100"
like "$T_TMP/rate3.txt" "^sends $N3\$" "the simulator took $N3 sends"
unlike "$T_TMP/rate3.txt" 'OVER' "no second held more than the override's 2 sends"
like "$T_TMP/rate3.txt" 'FULL' "and the override's 2 per second were used"
is "$(fl_stat responses429)" 0 "no 429"
ok "the simulator registered each invoice exactly once" fl_exactly_once $((N1 + N2 + N3))

unlike "$KSEFD_LOG" 'AddressSanitizer|runtime error' "no sanitizer report"
ok "ksefd stops on TERM" ksefd_stop TERM
is "$KSEFD_STATUS" 0 "and exits 0"
done_testing
