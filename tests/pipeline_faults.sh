#!/bin/sh
# pipeline_faults.sh: one ksefd and one ksef-sim, 300 invoices in three
# batches, while the simulator misbehaves the whole time (random 500s, 503s
# with HTML bodies, requests left unanswered until ksefd's 1 s timeout,
# connections reset before and after processing) and, in phases: a 429
# storm with growing Retry-After (1 s, 2 s, 3 s) on the send, status-list
# and session groups; an outage (503 HTML on everything, Latarnia FAILURE);
# a key rotation with every token expired (21470 on the next
# authentication and session); and online sessions that live 1.5 s.
# At the end every invoice is DONE, the simulator registered each exactly
# once, and no request of a group was sent while that group was paused by a
# 429, nor was any pause shorter than its Retry-After (the simulator's
# request log against ksefd's log and HTTP trace, see below).
. "$top_srcdir/tests/lib.sh"
t_tmpdir
. "$top_srcdir/tests/faults_lib.sh"
fl_setup

N=300
# Retry-After of the forced 429s, in the order they are armed, per group.
STORM_SEND="1 2 3"

FL_TRACE=http
# The outage phase tests the breaker on 503s: ksefd must meet the outage, not
# hear of it from Latarnia first and pause (tests/ops_outage.sh covers that).
FL_LATARNIA=off
ok "simulator starts with random faults and 1.5 s sessions" fl_sim_start \
    --limits off --processing-delay 100ms --auth-delay 0 --session-ttl 1500ms \
    --seed 4242 --fault all:500:p=0.02 --fault all:503:p=0.02 \
    --fault all:hang:every=97:count=3 --fault invoiceSend:reset:p=0.03 \
    --fault invoiceSend:reset-after:p=0.03 \
    --fault sessionInvoiceList:reset-after:p=0.02
fl_conf "$T_TMP/ksefd.conf" "[ksef]
request_timeout = 1s
connect_timeout = 1s
[limits]
windows = 1s 1s 1s
invoice_send = 40 - -"
ok "ksefd starts" ksefd_start -f "$T_TMP/ksefd.conf"

forced429_at_least() {
	[ "$(fl_stat faults 429)" -ge "$1" ]
}

# --- batch A and the 429 storm ---------------------------------------------

ok "batch A: 100 invoices accepted" fl_post FA 100
ok "the simulator receives sends" wait_until 20 fl_received_at_least 20
# Each step arms two 429s on the send group (and, in the first, one on the
# status list and one on session open/close), then waits until they fired:
# the next step finds ksefd coming out of the previous pause.
fired=0
for ra in $STORM_SEND; do
	rules="{\"group\":\"invoiceSend\",\"kind\":\"429\",\"ms\":${ra}000,\"every\":1,\"count\":2}"
	n=2
	if [ "$ra" = 1 ]; then
		rules="$rules,{\"group\":\"sessionInvoiceList\",\"kind\":\"429\",\"ms\":2000,\"every\":1,\"count\":1}"
		rules="$rules,{\"group\":\"onlineSession\",\"kind\":\"429\",\"ms\":1000,\"every\":1,\"count\":1}"
		n=4
	fi
	fired=$((fired + n))
	ok "storm: 429s with Retry-After ${ra}s armed" fl_sim_faults "{\"rules\":[$rules]}"
	ok "storm: they fired" wait_until 30 forced429_at_least $fired
done

# --- batch B and an outage ---------------------------------------------------

ok "batch B: 100 invoices accepted" fl_post FB 100
ok "the simulator receives batch B" wait_until 30 fl_received_at_least 120
ok "outage of 2 s armed" fl_sim_faults '{"outage":"2s"}'
fl_sim GET ../latarnia/status >"$T_TMP/latarnia.json" 2>&1
like "$T_TMP/latarnia.json" 'FAILURE' "Latarnia says FAILURE during the outage"

# --- key rotation, expired tokens, batch C -------------------------------------

ok "the simulator receives sends after the outage" wait_until 60 fl_received_at_least 150
ok "keys rotated and every token expired" \
    fl_sim_faults '{"rotateKey":true,"expireTokens":true}'
ok "batch C: 100 invoices accepted" fl_post FC 100

ok "all $N invoices DONE" wait_until 90 fl_done_is $N
diag "states: DONE $(fl_count DONE), FAILED $(fl_count FAILED), REJECTED $(fl_count REJECTED)"
is "$(fl_count FAILED)" 0 "none FAILED"
ok "the simulator registered each invoice exactly once" fl_exactly_once $N
fl_sim GET stats >"$T_TMP/stats.json"
diag "$(cat "$T_TMP/stats.json")"

# The faults really happened (a test that injected nothing proves nothing).
for k in '"500":[1-9]' '"503":[1-9]' '"hang":[1-9]' '"reset":[1-9]' \
    '"reset-after":[1-9]' '"outage503":[1-9]'; do
	like "$T_TMP/stats.json" "$k" "fault fired: $k"
done
like "$T_TMP/stats.json" '"duplicate":0[,}]' "no invoice reached the simulator twice (no 440)"
like "$T_TMP/stats.json" '"opened":([4-9]|[1-9][0-9]+)' "sessions expired and were replaced"
like "$KSEFD_LOG" 'no longer accepts our public key' "ksefd saw the key rotation (21470)"
like "$KSEFD_LOG" 'send in doubt' "sends with an unknown outcome were resolved through KSeF"

# --- no request while paused ---------------------------------------------------
#
# Three logs on one clock: the simulator's (each 429, in order per group:
# the k-th carries the k-th armed Retry-After), ksefd's "GROUP paused for
# D ms (429)" lines (when it learnt of each, and until when it holds the
# group) and ksefd's HTTP trace ("http: > METHOD URL": when each request
# started).  Checked: ksefd learnt of every 429; each pause lasts at least
# until the 429's time plus its Retry-After; and no request of the group
# started (in ksefd's log order) after the pause began and before it ended.
python3 - "$FL_SIM_LOG" "$KSEFD_LOG" \
    "invoiceSend=$(for r in $STORM_SEND; do printf '%s %s ' "$r" "$r"; done)" \
    "sessionInvoiceList=2" "onlineSession=1" >"$T_TMP/paused.txt" <<'PY'
import datetime, re, sys
simlog, klog = sys.argv[1], sys.argv[2]
armed = {}
for a in sys.argv[3:]:
    g, v = a.split("=")
    armed[g] = [int(x) * 1000 for x in v.split()]
kname = {"invoice_send": "invoiceSend", "session_invoice_list": "sessionInvoiceList",
         "online_session": "onlineSession"}
def ms(stamp):
    t = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f").timestamp()
    return int(round(t * 1000))
def group(path):
    p = re.sub(r"^https?://[^/]+", "", path.split("?")[0])
    if re.fullmatch(r"/v2/sessions/online(/[^/]+/close)?", p):
        return "onlineSession"
    if re.fullmatch(r"/v2/sessions/online/[^/]+/invoices", p):
        return "invoiceSend"
    if re.fullmatch(r"/v2/sessions/[^/]+/invoices", p):
        return "sessionInvoiceList"
    return None
sim429 = {}
rx = re.compile(r"^(\S+) sim: \S+ (\S+) -> 429")
for l in open(simlog, errors="replace"):
    m = rx.match(l)
    if m and group(m.group(2)):
        sim429.setdefault(group(m.group(2)), []).append(ms(m.group(1)))
pauses, starts = {}, {}
rp = re.compile(r"^(\S+) sched: context \d+: (\S+) paused for (-?\d+) ms \(429\)")
rs = re.compile(r"^(\S+) http: > \S+ (\S+) \(")
for n, l in enumerate(open(klog, errors="replace")):
    m = rp.match(l)
    if m and m.group(2) in kname:
        t = ms(m.group(1))
        pauses.setdefault(kname[m.group(2)], []).append((n, t, t + int(m.group(3))))
    m = rs.match(l)
    if m and group(m.group(2)):
        starts.setdefault(group(m.group(2)), []).append((n, ms(m.group(1))))
bad = 0
for g, ras in armed.items():
    s4, ps, st = sim429.get(g, []), pauses.get(g, []), starts.get(g, [])
    print("%s: armed %d, simulator answered %d, ksefd paused %d times, %d requests" %
          (g, len(ras), len(s4), len(ps), len(st)))
    if not (len(ras) == len(s4) == len(ps)) or not st:
        bad += 1
        continue
    late = 0
    for t429, ra, (line, since, until) in zip(s4, ras, ps):
        late = max(late, since - t429)
        if until < t429 + ra - 10:
            bad += 1
            print("%s: paused until %d ms after the 429, its Retry-After was %d ms" %
                  (g, until - t429, ra))
        for n, t in st:
            if n > line and t < until - 1:
                bad += 1
                print("%s: request started %d ms into a pause of %d ms" %
                      (g, t - since, until - since))
    print("%s: ksefd learnt of a 429 at most %d ms after the simulator sent it" % (g, late))
print("violations", bad)
PY
diag "$(cat "$T_TMP/paused.txt")"
like "$T_TMP/paused.txt" '^violations 0$' "no request was sent while its group was paused, and no pause was shorter than its Retry-After"
unlike "$KSEFD_LOG" 'AddressSanitizer|runtime error' "no sanitizer report"
ok "ksefd stops on TERM" ksefd_stop TERM
is "$KSEFD_STATUS" 0 "and exits 0"
done_testing
