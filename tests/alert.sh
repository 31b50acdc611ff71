#!/bin/sh
# alert.sh: alerts fire once per cause in every sink.  ksef-sim answers
# every invoice send with a 503, so with retry.max_age = 1s an invoice ends
# FAILED; `ksefctl retry` three times fails it again the same way.  The
# context's token is one the simulator does not know, so authentication
# fails over and over too (and nothing is ever sent), also after a
# restart.  Syslog (ksefd's stderr), the command (which
# appends its stdin to a file) and a webhook (a small POST receiver here)
# each get exactly one alert per cause, as JSON that parses.  Then a reload
# makes the command hang: it is killed at alert.command_timeout while the
# API keeps answering.
. "$top_srcdir/tests/lib.sh"
t_tmpdir
. "$top_srcdir/tests/faults_lib.sh"
fl_setup
command -v python3 >/dev/null || skip_all "python3 is needed"

FAILED_ERE="sched: [0-9a-f]+ [A-Z]+ -> FAILED"
HOOK_PID=

# A webhook receiver: each POST body is appended as one line; answers 200,
# except the very first POST, which gets a 500 (ksefd must retry it).
cat >"$T_TMP/hook.py" <<'PY'
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    n = 0
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        H.n += 1
        if H.n == 1:
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        with open(sys.argv[1], "ab") as f:
            f.write(body.rstrip(b"\n") + b"\n")
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
open(sys.argv[2], "w").write(str(s.server_address[1]))
s.serve_forever()
PY
: >"$T_TMP/hook.jsonl"
python3 "$T_TMP/hook.py" "$T_TMP/hook.jsonl" "$T_TMP/hook.port" &
HOOK_PID=$!
trap 'kill $HOOK_PID 2>/dev/null; fl_cleanup' EXIT
wait_until 10 test -s "$T_TMP/hook.port" || bail "webhook receiver did not start"
HOOK_URL=http://127.0.0.1:$(cat "$T_TMP/hook.port")/alert

ok "simulator starts" fl_sim_start --limits off --auth-delay 0
t_secret "$T_TMP/badtoken" "20250101-EC-0000000002-0000000002-01|nip-$FL_NIP|x"
alert_conf() {
	fl_conf "$T_TMP/ksefd.conf" "[retry]
max_age = 1s
[alert]
syslog = yes
command = cat >> $T_TMP/cmd.jsonl$1
command_timeout = ${2:-10s}
webhook = $HOOK_URL"
	sed -i "s|^token_file = .*|token_file = $T_TMP/badtoken|" "$T_TMP/ksefd.conf"
}
alert_conf
ok "ksefd starts" ksefd_start -f "$T_TMP/ksefd.conf"
CTL="$KSEFCTL -s $T_TMP/ksefd.sock"

ok "one invoice accepted" fl_post F 1
failed_count() {
	[ "$(fl_count FAILED)" -eq 1 ]
}
ok "it ends FAILED (retry.max_age)" wait_until 20 failed_count
ID=$($CTL -j list --all --state FAILED | sed -n 's/.*"id":"\([^"]*\)".*/\1/p' | head -n 1)
ok "its id" test -n "$ID"

# n_log ERE N: the log has at least N lines matching ERE.
n_log() {
	[ "$(grep -Ec -- "$1" "$KSEFD_LOG")" -ge "$2" ]
}
for i in 1 2 3; do
	ok "retry $i accepted" sh -c "$CTL retry $ID >/dev/null"
	ok "retry $i: QUEUED again" wait_until 10 n_log "FAILED -> QUEUED" $i
	ok "retry $i: FAILED again" wait_until 20 n_log "$FAILED_ERE" $((i + 1))
done
ok "the invoice is FAILED again" wait_until 20 failed_count
ok "authentication failed more than once" \
    n_log "sched: context $FL_NIP: authentication failed" 3

# Let the sinks catch up: each has every alert syslog has (and at least
# the auth and the FAILED one).
alerts_n() {
	grep -Ec "alert: (invoice|context) " "$KSEFD_LOG"
}
caught_up() {
	_n=$(alerts_n)
	[ "$_n" -ge 2 ] &&
	    [ "$(grep -Ec 'alert: command pid .* exited 0' "$KSEFD_LOG")" -eq "$_n" ] &&
	    [ "$(grep -c . "$T_TMP/cmd.jsonl")" -eq "$_n" ] &&
	    [ "$(grep -c . "$T_TMP/hook.jsonl")" -eq "$_n" ]
}
ok "every sink has every alert" wait_until 10 caught_up

# Exactly one alert per cause in each: count by kind and subject.
count_py='import collections, json, sys
c = collections.Counter()
for l in open(sys.argv[1]):
    o = json.loads(l)
    for k in ("id", "time", "kind", "subject", "cause", "message", "reminder", "host"):
        assert k in o, k
    c[(o["kind"], o["subject"] if o["kind"] != "failed" else "inv")] += 1
print(" ".join("%s/%s=%d" % (k[0], k[1], n) for k, n in sorted(c.items())))'
want="auth/$FL_NIP=1 failed/inv=1"
for sink in cmd hook; do
	got=$(python3 -c "$count_py" "$T_TMP/$sink.jsonl" 2>&1)
	is "$got" "$want" "$sink sink: one alert per cause, JSON parses"
done
is "$(grep -c 'alert: invoice .* FAILED' "$KSEFD_LOG")" 1 "syslog: one FAILED alert"
is "$(grep -c "alert: context $FL_NIP: authentication failed" "$KSEFD_LOG")" 1 \
    "syslog: one authentication alert"
like "$KSEFD_LOG" "alert: command pid [0-9]+ for alert [0-9]+ exited 0" \
    "the command's exit status is logged"
like "$KSEFD_LOG" "alert: webhook answered 500 to alert 1 \\(attempt 1\\)$" \
    "the webhook's 500 is logged (and retried: it has every alert)"

# What fired is kept in the database: a restart, with authentication
# still failing, does not alert it again.
ok "ksefd stops for a restart" ksefd_stop TERM
n=$(grep -c "sched: context $FL_NIP: authentication failed" "$KSEFD_LOG")
nf=$(grep -Ec "$FAILED_ERE" "$KSEFD_LOG")
ok "ksefd starts again" ksefd_start -f "$T_TMP/ksefd.conf"
ok "retry after the restart accepted" sh -c "$CTL retry $ID >/dev/null"
ok "after the restart: FAILED again" wait_until 20 n_log "$FAILED_ERE" $((nf + 1))
ok "authentication fails again after the restart" \
    wait_until 10 n_log "sched: context $FL_NIP: authentication failed" $((n + 3))
is "$(grep -c "alert: context $FL_NIP: authentication failed" "$KSEFD_LOG")" 1 \
    "after the restart: still one authentication alert"
is "$(grep -c 'alert: invoice .* FAILED' "$KSEFD_LOG")" 1 \
    "after the restart: still one FAILED alert"

# A hanging command: killed at its timeout, the loop keeps serving.
alert_conf "; exec sleep 60" 1500ms
kill -HUP "$KSEFD_PID"
ok "reloaded" wait_log "$KSEFD_LOG" "reloaded configuration" 10
ok "another invoice accepted" fl_post G 1
ok "a command for it is started" wait_log "$KSEFD_LOG" \
    "alert: invoice .* FAILED" 20
api_fast() {
	_t0=$(date +%s%N)
	$CTL -j list --limit 1 >/dev/null 2>&1 || return 1
	[ $((($(date +%s%N) - _t0) / 1000000)) -lt 1000 ]
}
n=0
while ! grep -q "still running after" "$KSEFD_LOG" && [ $n -lt 1000 ]; do
	api_fast || break
	n=$((n + 1))
done
ok "the API answered within 1 s while the command hung ($n times)" \
    test "$n" -ge 3
ok "the command is killed at its timeout" \
    wait_log "$KSEFD_LOG" "alert: command pid [0-9]+ for alert [0-9]+ killed by signal 9 \\(timeout\\)" 10
ok "the webhook still got that alert" \
    wait_until 10 sh -c "[ \$(grep -c . '$T_TMP/hook.jsonl') -eq 3 ]"

ok "ksefd stops" ksefd_stop TERM
is "$KSEFD_STATUS" 0 "ksefd exit status"
done_testing
