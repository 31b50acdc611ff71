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
#     an invoice afterwards reaches DONE.
# Everything is stopped at exit (trap); only 127.0.0.1.
. "$top_srcdir/tests/lib.sh"
. "$top_srcdir/tests/faults_lib.sh"

t_tmpdir
fl_setup

ctl() {
	"$KSEFCTL" -s "$T_TMP/ksefd.sock" "$@"
}

# idle_start NAME MARGIN SIM-ARGS...: a fresh simulator and ksefd (new
# database) with that refresh margin and nothing else to do when idle:
# sessions stay open, no rate-limit fetches, no reconciliation.
idle_start() {
	_in=$1 _im=$2
	shift 2
	ok "$_in: simulator starts" fl_sim_start --limits off --auth-delay 0 \
	    --processing-delay 20ms "$@"
	rm -rf "$T_TMP/db"
	fl_conf "$T_TMP/$_in.conf" "[ksef]
token_refresh_margin = $_im
[session]
idle_timeout = 1h
[limits]
enabled = no"
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

done_testing
