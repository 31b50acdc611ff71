#!/bin/sh
# http_resolver.sh: KSeF at a host name, not an address.  curl resolves a
# name in a thread that wakes it through a socketpair, and closes that
# socketpair by itself when the answer is in; the next file ksefd opens gets
# one of its descriptor numbers.  Until src/http.c dropped the socketpair's
# event at CURL_POLL_REMOVE, that event outlived its descriptor, and libevent
# (which counts interest per descriptor number) never watched the next
# file: the first API client after an authentication attempt hung for good.
# Every other test gives KSeF as 127.0.0.1, which curl never resolves.
. "$top_srcdir/tests/lib.sh"

t_tmpdir
export KSEFD_SCHEMA_DIR="$top_srcdir/schemas"
NIP=5265877635
SOCK=$T_TMP/ksefd.sock

# A name no resolver can know (RFC 2606): curl asks its resolver thread,
# which fails; no connection is ever opened, so no socket of curl's takes
# the socketpair's descriptors back (with a name that resolves, the
# connection's socket usually does, and covers the bug).  Without a DNS
# server in reach the answer waits for the resolver's timeout: one second.
name=ksefd-test.invalid
RES_OPTIONS="timeout:1 attempts:1"
export RES_OPTIONS
diag "KSeF at https://$name:9/v2 (a closed port)"

mkdir -p "$T_TMP/tokens"
t_secret "$T_TMP/tokens/$NIP"
cat >"$T_TMP/ksefd.conf" <<EOF
[log]
level = debug
[ksef]
environment = https://$name:9/v2
latarnia_url = https://$name:9
[storage]
database = $T_TMP/db
map_size = 16M
[api]
socket = $SOCK
[retry]
backoff_min = 300ms
backoff_max = 1s
[context $NIP]
token_file = $T_TMP/tokens/$NIP
EOF

ok "ksefd starts" ksefd_start -f "$T_TMP/ksefd.conf"
# At start ksefd asks Latarnia, which resolves the name: the socketpair
# has come and gone before any client connects.
ok "it resolved the name for Latarnia" \
    wait_log "$KSEFD_LOG" "latarnia: https://$name:9/status: " 30

# post N: invoice N over a new connection; its status code in $T_TMP/code.N.
# run_capped: an answer that never comes fails the test, not the suite.
post() {
	sed "s#<P_2>[^<]*</P_2>#<P_2>RESOLVER/$1</P_2>#" \
	    "$top_srcdir/tests/data/valid/extra-fa3-gross.xml" >"$T_TMP/inv.$1.xml"
	run_capped 15 curl -s -o /dev/null -w '%{http_code}' --max-time 10 \
	    --unix-socket "$SOCK" -H 'Content-Type: application/xml' \
	    --data-binary "@$T_TMP/inv.$1.xml" http://ksefd/v1/invoices \
	    >"$T_TMP/code.$1"
}
# The first gets the lowest free descriptor: one of the socketpair's.
for i in 1 2 3; do
	post $i
	is "$(cat "$T_TMP/code.$i")" 201 "invoice $i over a new connection is answered (201)"
done

# The queued invoices start an authentication: the name is resolved again.
ok "it resolved the name to authenticate" \
    wait_log "$KSEFD_LOG" "context $NIP: authentication failed" 30
# Four clients at once take the four lowest free descriptors.
pids=
for i in 4 5 6 7; do
	post $i &
	pids="$pids $!"
done
for p in $pids; do wait "$p"; done
for i in 4 5 6 7; do
	is "$(cat "$T_TMP/code.$i")" 201 "invoice $i, one of four at once, is answered (201)"
done

ok "ksefd stops" ksefd_stop
is "$KSEFD_STATUS" 0 "exit status 0"
done_testing
