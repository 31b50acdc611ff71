#!/bin/sh
# auth_idle.sh: an idle context keeps its tokens fresh.  The real ksefd
# against ksef-sim (TLS) with access tokens living 2 s, refreshed 1 s ahead:
#  1. a few invoices go through, then ksefd idles for several access-token
#     lifetimes: the simulator sees token refreshes in that time (about one
#     per second, not a storm) and no new authentication; ksefd still holds
#     a valid access token; an invoice sent afterwards reaches DONE; no 401
#     anywhere and still the one authentication;
#  2. refresh tokens living 4 s as well, and a margin (5 s) longer than
#     either lifetime: while idle, ksefd authenticates from scratch ahead of
#     the refresh token's expiry (never a refused refresh, never a 401),
#     renewing at half a token's life rather than at once, again and again;
#     an invoice afterwards reaches DONE;
#  3. two contexts, one removed by a reload: the removed one renews nothing
#     any more, while the other keeps refreshing;
#  4. refreshes failing (503) while idle: retried with backoff, not in a
#     storm; once KSeF answers again the token is refreshed and an invoice
#     reaches DONE.
# Everything is stopped at exit (trap); only 127.0.0.1.
. "$top_srcdir/tests/lib.sh"
. "$top_srcdir/tests/faults_lib.sh"

NIP2=1234563218		# a second context (valid checksum)

t_tmpdir
fl_setup
t_secret "$T_TMP/tok2" "20250101-EC-0000000002-0000000002-02|nip-$NIP2|idle-2"
sed "s/$FL_NIP/$NIP2/" "$FL_TEMPLATE" >"$T_TMP/template2.xml"

ctl() {
	"$KSEFCTL" -s "$T_TMP/ksefd.sock" "$@"
}

# idle_conf FILE MARGIN [EXTRA]: fl_conf's config with that refresh margin
# and nothing else to do when idle: sessions stay open, no rate-limit
# fetches, no reconciliation.
idle_conf() {
	fl_conf "$1" "[ksef]
token_refresh_margin = $2
[session]
idle_timeout = 1h
[limits]
enabled = no
${3:-}"
}

# idle_start NAME MARGIN SIM-ARGS...: a fresh simulator (which also takes
# the second context's token) and ksefd on $T_TMP/NAME.conf (idle_conf
# with IDLE_EXTRA) with a new database.
idle_start() {
	_in=$1 _im=$2
	shift 2
	ok "$_in: simulator starts" fl_sim_start --limits off --auth-delay 0 \
	    --processing-delay 20ms --token "$NIP2:$(cat "$T_TMP/tok2")" "$@"
	rm -rf "$T_TMP/db"
	idle_conf "$T_TMP/$_in.conf" "$_im" "${IDLE_EXTRA:-}"
	ok "$_in: ksefd starts" ksefd_start -f "$T_TMP/$_in.conf"
}

idle_stop() {
	ksefd_stop TERM || ksefd_stop KILL
	is "$KSEFD_STATUS" 0 "$1: ksefd exits cleanly"
	fl_sim_stop
}

# token_left: seconds the context's access token has left (ksefctl status).
token_left() {
	ctl -j status | python3 -c 'import json, sys
v = json.load(sys.stdin)["contexts"][0]["token_expires_in_s"]
print("none" if v is None else v)'
}

# token_valid: ksefd holds an access token that has not expired.
token_valid() {
	python3 -c 'import sys; sys.exit(not float(sys.argv[1]) > 0)' \
	    "$(token_left)" 2>/dev/null
}

# refreshes_at_least N / auths_at_least N: the simulator's counts.
refreshes_at_least() {
	[ "$(fl_stat refreshes)" -ge "$1" ]
}
auths_at_least() {
	[ "$(fl_stat authentications)" -ge "$1" ]
}

# sim_count ERE: requests in the simulator's log matching ERE.
sim_count() {
	grep -cE "$1" "$FL_SIM_LOG"
}

now_ms() {
	python3 -c 'import time; print(int(time.time() * 1000))'
}

# renewals: refreshes plus authentications the simulator saw.
renewals() {
	echo $(($(fl_stat refreshes) + $(fl_stat authentications)))
}

# no_storm NAME N MS: N renewals in MS of idling are at most one a second
# (due at half a 2 s life at the soonest), with one of slack at each end.
no_storm() {
	diag "$1: $2 renewals in $3 ms of idling"
	ok "$1: at most one renewal a second ($2 in $3 ms)" \
	    test "$2" -le $(($3 / 1000 + 2))
}

# --- 1. access tokens of 2 s, an idle spell of several lifetimes ----------

idle_start idle 1s --access-ttl 2s
ok "idle: 5 invoices accepted" fl_post IA 5
ok "idle: all 5 DONE" wait_until 30 fl_done_is 5
a0=$(fl_stat authentications)
r0=$(fl_stat refreshes)
is "$a0" 1 "idle: one authentication to get there"
t0=$(now_ms)
ok "idle: refreshes while idle, with no work queued" \
    wait_until 10 refreshes_at_least $((r0 + 5))
t1=$(now_ms)
no_storm idle $(($(fl_stat refreshes) - r0)) $((t1 - t0))
ok "idle: ksefd holds a valid access token after $((t1 - t0)) ms idle" \
    token_valid
is "$(fl_stat authentications)" 1 "idle: no authentication from scratch while idle"
ok "idle: one more invoice accepted" fl_post IB 1
ok "idle: it is DONE" wait_until 30 fl_done_is 6
is "$(fl_stat authentications)" 1 "idle: still the one authentication"
is "$(sim_count ' -> 401')" 0 "idle: the simulator answered no 401"
ok "idle: the simulator registered 6 invoices, each once" fl_exactly_once 6
idle_stop idle

# --- 2. refresh tokens of 4 s, a margin of 5 s ------------------------------

: >"$FL_SIM_LOG"
idle_start reauth 5s --access-ttl 2s --refresh-ttl 4s
ok "reauth: 3 invoices accepted" fl_post RA 3
ok "reauth: all 3 DONE" wait_until 30 fl_done_is 3
a0=$(fl_stat authentications) n0=$(renewals)
t0=$(now_ms)
ok "reauth: authenticated from scratch again while idle" \
    wait_until 10 auths_at_least $((a0 + 2))
t1=$(now_ms)
no_storm reauth $(($(renewals) - n0)) $((t1 - t0))
ok "reauth: ksefd holds a valid access token" token_valid
ok "reauth: one more invoice accepted" fl_post RB 1
ok "reauth: it is DONE" wait_until 30 fl_done_is 4
is "$(sim_count ' -> 401')" 0 "reauth: the simulator answered no 401"
is "$(sim_count 'POST /v2/auth/token/refresh -> [^2]')" 0 \
    "reauth: no refresh was refused (none with an expired refresh token)"
ok "reauth: the simulator registered 4 invoices, each once" fl_exactly_once 4
idle_stop reauth

# --- 3. a context removed by a reload renews nothing ---------------------

# nip_log NIP ERE: lines of ksefd's log after $mark about NIP matching ERE.
nip_log() {
	tail -n "+$((mark + 1))" "$KSEFD_LOG" | grep -cE " ksef: $1: $2"
}
refreshed_at_least() {
	[ "$(nip_log "$1" 'access token refreshed')" -ge "$2" ]
}

: >"$FL_SIM_LOG"
: >"$KSEFD_LOG"
FL_TRACE=ksef IDLE_EXTRA="[context $NIP2]
token_file = $T_TMP/tok2" idle_start removed 1s --access-ttl 2s
FL_TRACE=ksef idle_conf "$T_TMP/removed-after.conf" 1s
ok "removed: 2 invoices accepted for the first context" fl_post DA 2
"$FL_LOADGEN" -s "$T_TMP/ksefd.sock" -t "$T_TMP/template2.xml" -c 2 -n 2 \
    -d 2 -p DB >"$T_TMP/lg-DB" 2>&1
like "$T_TMP/lg-DB" '"201":2[,}]' "removed: 2 invoices accepted for the second"
ok "removed: all 4 DONE" wait_until 30 fl_done_is 4
mark=0
ok "removed: the second context refreshes while idle" \
    wait_until 10 refreshed_at_least $NIP2 1
cp "$T_TMP/removed-after.conf" "$T_TMP/removed.conf"
kill -HUP "$KSEFD_PID"
ok "removed: reloaded without the second context" \
    wait_log "$KSEFD_LOG" "reloaded configuration" 10
mark=$(grep -n "reloaded configuration" "$KSEFD_LOG" | tail -1 | cut -d: -f1)
ok "removed: the first context refreshes on" \
    wait_until 10 refreshed_at_least $FL_NIP 4
is "$(nip_log $NIP2 '(token refresh|authenticate): (GET|POST) ')" 0 \
    "removed: no renewal request for the removed context after the reload"
is "$(sim_count ' -> 401')" 0 "removed: the simulator answered no 401"
idle_stop removed

# --- 4. refreshes failing while idle --------------------------------------

: >"$FL_SIM_LOG"
idle_start failing 1s --access-ttl 2s
ok "failing: 2 invoices accepted" fl_post FA 2
ok "failing: both DONE" wait_until 30 fl_done_is 2
ok "failing: authentication requests answered 503 from now on" \
    fl_sim_faults '{"rules":[{"group":"public","kind":"503","every":1,"count":100000}]}'
refused_at_least() {
	[ "$(sim_count 'POST /v2/auth/token/refresh -> 503')" -ge "$1" ]
}
ok "failing: refreshes tried again and again while idle" \
    wait_until 20 refused_at_least 6
# The gaps between the first six attempts, from the simulator's log: the
# backoff (50 ms to 1 s, fl_conf) allows none shorter than 50 ms; a storm
# would show gaps of a millisecond or two.
python3 - "$FL_SIM_LOG" >"$T_TMP/gaps" <<'PY'
import datetime, re, sys
rx = re.compile(r"^(\S+) sim: POST /v2/auth/token/refresh -> 503")
t = [datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f").timestamp()
     for m in map(rx.match, open(sys.argv[1], errors="replace")) if m][:6]
print("gaps", " ".join(str(int(round((b - a) * 1000))) for a, b in zip(t, t[1:])))
PY
diag "failing: ms between refresh attempts: $(cat "$T_TMP/gaps")"
like "$T_TMP/gaps" '^gaps( [0-9]+){5}$' "failing: five gaps measured"
unlike "$T_TMP/gaps" ' ([0-9]|[1-3][0-9])( |$)' \
    "failing: retried with backoff, never within 40 ms (no storm)"
r0=$(fl_stat refreshes)
ok "failing: faults cleared" fl_sim_faults '{"clear":true}'
ok "failing: refreshed again once KSeF answers" \
    wait_until 20 refreshes_at_least $((r0 + 1))
ok "failing: one more invoice accepted" fl_post FB 1
ok "failing: it is DONE" wait_until 30 fl_done_is 3
idle_stop failing

done_testing
