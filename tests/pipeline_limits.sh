#!/bin/sh
# pipeline_limits.sh: the official rate limits, with the windows scaled
# (1 s, 2 s, 20 s for 1 s, 60 s, 60 min) in both ksef-sim and ksefd.  For
# invoice sends (10/s, 30/min, 180/h) the binding window is the scaled
# hour: 180 per 20 s = 9/s.  A run of 270 invoices must use at least 95% of
# that rate, and the simulator must answer no 429 at all — also across a
# SIGKILL and restart of ksefd just before the hourly window fills (the
# limiter's state is in the store; a ksefd that forgot it would send past
# 180 in 20 s).  The measured rate is printed as a diagnostic.
. "$top_srcdir/tests/lib.sh"
t_tmpdir
. "$top_srcdir/tests/faults_lib.sh"
fl_setup

N=270
WINDOWS_MS="1000 2000 20000"
SEND_LIMITS="10 30 180"		# invoice_send, official (API.md section 10)
RESTART_AT=170			# sends received by the simulator

ok "simulator starts with the official limits, windows 1s,2s,20s" \
    fl_sim_start --limits on --limit-windows 1s,2s,20s \
    --processing-delay 50ms --auth-delay 0
fl_conf "$T_TMP/ksefd.conf" "[limits]
enabled = yes
windows = 1s 2s 20s"
ok "ksefd starts" ksefd_start -f "$T_TMP/ksefd.conf"

ok "$N invoices accepted" fl_post LIM $N

ok "the simulator received $RESTART_AT sends" wait_until 40 fl_received_at_least $RESTART_AT
cp "$KSEFD_LOG" "$T_TMP/ksefd-1.log"
ok "ksefd killed (SIGKILL) with the hourly window nearly full" ksefd_stop KILL
ok "ksefd restarts" ksefd_start -f "$T_TMP/ksefd.conf"
like "$KSEFD_LOG" 'sched: [0-9]+ unfinished invoices' "the restarted ksefd picked up the backlog"

ok "all $N invoices DONE" wait_until 60 fl_done_is $N
ok "the simulator registered each invoice exactly once" fl_exactly_once $N
fl_sim GET stats >"$T_TMP/stats.json"
like "$T_TMP/stats.json" '"responses429":0[,}]' "the simulator answered no 429"
[ "$T_FAILED" -eq 0 ] || diag "$(cat "$T_TMP/stats.json")"

# The sends as the simulator saw them: every window within its limit, the
# first scaled hour (nearly) full, and the rate over the run.
fl_sends "$T_TMP/sends.txt"
python3 - "$T_TMP/sends.txt" "$WINDOWS_MS" "$SEND_LIMITS" "$RESTART_AT" \
    >"$T_TMP/rate.txt" <<'PY'
import sys
t = [int(l.split()[0]) for l in open(sys.argv[1]) if l.split()[1] == "202"]
win = [int(x) for x in sys.argv[2].split()]
lim = [int(x) for x in sys.argv[3].split()]
restart = int(sys.argv[4])
print("sends", len(t))
if len(t) < 2:
    print("rate_low")
    sys.exit(0)
for w, m in zip(win, lim):
    # most sends in any window of w ms (arrivals in [t_i, t_i + w))
    j, most = 0, 0
    for i in range(len(t)):
        while t[i] - t[j] >= w:
            j += 1
        most = max(most, i - j + 1)
    print("window %d ms: at most %d sends (limit %d)%s" % (w, most, m,
          "" if most <= m else " OVER"))
hour, cap = win[2], lim[2]
first = sum(1 for x in t if x < t[0] + hour)
print("first %d ms: %d sends of %d permitted (%.1f%%)" % (hour, first, cap, 100.0 * first / cap))
# Past the first 180 sends the hour binds: send i may go when send i-180
# leaves the window, so 180 / mean(t_i - t_(i-180)) is the rate the
# binding window let through (permitted: 180 per 20 s).
gaps = [t[i] - t[i - cap] for i in range(cap, len(t))]
perm = cap * 1000.0 / hour
rate = cap * 1000.0 / (sum(gaps) / len(gaps)) if gaps else 0.0
print("steady: %d sends, each %.0f ms (mean; at most %d) after the one %d before" %
      (len(gaps), sum(gaps) / max(len(gaps), 1), max(gaps or [0]), cap))
print("rate %.3f/s of %.3f/s permitted (%.1f%%); over the whole run %.3f/s" %
      (rate, perm, 100.0 * rate / perm, (len(t) - 1) * 1000.0 / (t[-1] - t[0])))
print("rate_ok" if rate >= 0.95 * perm and first >= 0.95 * cap else "rate_low")
PY
diag "$(cat "$T_TMP/rate.txt")"
like "$T_TMP/rate.txt" "^sends $N\$" "the simulator took $N sends"
unlike "$T_TMP/rate.txt" 'OVER' "no window held more sends than its limit"
like "$T_TMP/rate.txt" '^rate_ok$' "the run used at least 95% of the permitted rate (binding window: 180 per 20 s)"

unlike "$KSEFD_LOG" 'AddressSanitizer|runtime error' "no sanitizer report"
ok "ksefd stops on TERM" ksefd_stop TERM
is "$KSEFD_STATUS" 0 "and exits 0"
done_testing
