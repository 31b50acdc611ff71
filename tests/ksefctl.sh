#!/bin/sh
# ksefctl.sh: ksefctl against a running ksefd, black box: submit (created,
# exists, conflict, refused, a directory, JSON lines, progress bar), show,
# list (filters, paging), the TCP listener with its token, help, exit statuses.
. "$top_srcdir/tests/lib.sh"

t_tmpdir
export KSEFD_SCHEMA_DIR="$top_srcdir/schemas"
unset KSEFD_SOCKET KSEFD_TOKEN_FILE
NIP=5265877635
SAMPLE=$top_srcdir/tests/data/valid/fa3-invoice-pdfgen.xml
SAMPLE_NUMBER='FA/YUCFO-4342344706/03/2026'
INVALID=$top_srcdir/tests/data/invalid/nip-seller-checksum.xml
SOCK=$T_TMP/ksefd.sock
OUT=$T_TMP/out
ID_RE='[0-9a-f]{64}'

mkdir -p "$T_TMP/tokens"
t_secret "$T_TMP/tokens/$NIP"
t_secret "$T_TMP/api.token" "ctl-test-token"
t_secret "$T_TMP/wrong.token" "not-the-token"
# KSeF itself is a closed loopback port: nothing leaves, invoices stay queued.
cat >"$T_TMP/ksefd.conf" <<EOF
[log]
level = info
[ksef]
environment = http://127.0.0.1:9/v2
latarnia_url = off
[storage]
database = $T_TMP/db
map_size = 16M
[api]
socket = $SOCK
socket_mode = 0600
listen = 127.0.0.1:0
token_file = $T_TMP/api.token
[intake]
future_tolerance = 3650d
[context $NIP]
token_file = $T_TMP/tokens/$NIP
EOF

# ctl ARGS...: run ksefctl on the test socket; stdout in OUT, stderr in
# OUT.err, exit status in RC.
ctl() {
	"$KSEFCTL" -s "$SOCK" "$@" >"$OUT" 2>"$OUT.err" </dev/null
	RC=$?
}
# lines FILE: how many lines FILE has.
lines() {
	wc -l <"$1" | tr -d ' '
}
# json_lines FILE: every line of FILE is a JSON object.
json_lines() {
	python3 -c '
import json, sys
for line in open(sys.argv[1]):
    assert isinstance(json.loads(line), dict)
' "$1"
}
# jfield FILE EXPR: evaluate EXPR over each JSON line j of FILE, one per line.
jfield() {
	python3 -c '
import json, sys
for line in open(sys.argv[1]):
    j = json.loads(line)
    print(eval(sys.argv[2]))
' "$1" "$2"
}

# --- help, usage, unreachable: no daemon needed --------------------------

"$KSEFCTL" --help >"$OUT" 2>&1
is "$?" 0 "--help exits 0"
for w in submit show list help KSEFD_SOCKET KSEFD_TOKEN_FILE 'Exit status' \
    'cannot reach ksefd'; do
	like "$OUT" "$w" "--help mentions $w"
done
for c in submit show list; do
	"$KSEFCTL" help "$c" >"$OUT" 2>&1
	is "$?" 0 "help $c exits 0"
	like "$OUT" "^usage: ksefctl $c" "help $c prints its usage"
done
"$KSEFCTL" frobnicate >"$OUT" 2>&1
is "$?" 2 "unknown command: exit 2"
like "$OUT" "unknown command .frobnicate" "unknown command: says so"
"$KSEFCTL" -s "$SOCK" show 1234 >"$OUT" 2>&1
is "$?" 2 "show with a bad id: exit 2"
"$KSEFCTL" -s "$SOCK" list --state NOPE >"$OUT" 2>&1
is "$?" 2 "list with an unknown state: exit 2"
like "$OUT" "unknown state .NOPE" "list with an unknown state: says so"
ctl list
is "$RC" 3 "no socket: exit 3"
like "$OUT.err" "^ksefctl: cannot reach ksefd at $SOCK: No such file" \
    "no socket: cannot reach ksefd at PATH"
ctl submit "$SAMPLE"
is "$RC" 3 "submit without a daemon: exit 3"
"$KSEFCTL" -u http://192.0.2.1:80 -t "$T_TMP/api.token" list >"$OUT" 2>&1
is "$?" 2 "-u to a non-loopback address: exit 2"

# --- with ksefd ----------------------------------------------------------

ok "ksefd starts" ksefd_start -f "$T_TMP/ksefd.conf" ||
    { cat "$KSEFD_LOG" | sed 's/^/# /'; done_testing; }
ok "API socket exists" wait_until 10 test -S "$SOCK"

ctl submit "$SAMPLE"
is "$RC" 0 "official FA(3) sample: exit 0"
like "$OUT" "^$SAMPLE: created $ID_RE\$" "sample: created ID"
like "$OUT" "^1 created, 0 existing, 0 conflicts, 0 refused\$" "sample: summary"
ID=$(sed -n "s|^$SAMPLE: created \\([0-9a-f]*\\)\$|\\1|p" "$OUT")

ctl submit "$SAMPLE"
is "$RC" 0 "same bytes again: exit 0"
like "$OUT" "^$SAMPLE: exists $ID\$" "same bytes again: exists, same id"
like "$OUT" "^0 created, 1 existing, 0 conflicts, 0 refused\$" \
    "same bytes again: summary"

sed "s|<P_2>$SAMPLE_NUMBER</P_2>|<P_2>$SAMPLE_NUMBER</P_2><!-- changed -->|" \
    "$SAMPLE" >"$T_TMP/changed.xml"
ok "changed copy differs" sh -c '! cmp -s "$1" "$2"' sh "$SAMPLE" \
    "$T_TMP/changed.xml"
ctl submit "$T_TMP/changed.xml"
is "$RC" 1 "changed copy, same number: exit 1"
like "$OUT" "^$T_TMP/changed.xml: conflict $ID: " "changed copy: conflict with the first"
like "$OUT" "^0 created, 0 existing, 1 conflict, 0 refused\$" "conflict: summary"

ctl submit "$INVALID"
is "$RC" 1 "invalid invoice: exit 1"
like "$OUT" "^$INVALID: refused: nip\\.seller\\.checksum 15(:[0-9]+)? seller NIP" \
    "invalid invoice: refused with rule and line:column"
like "$OUT" "^0 created, 0 existing, 0 conflicts, 1 refused\$" "refused: summary"

mkdir "$T_TMP/dir" "$T_TMP/dir/sub"
i=1
while [ $i -le 20 ]; do
	sed "s|<P_2>$SAMPLE_NUMBER</P_2>|<P_2>CTL/$i/2026</P_2>|" "$SAMPLE" \
	    >"$T_TMP/dir/inv-$(printf %02d $i).xml"
	i=$((i + 1))
done
echo "not an invoice" >"$T_TMP/dir/notes.txt"
echo "not an invoice" >"$T_TMP/dir/.hidden.xml"
cp "$SAMPLE" "$T_TMP/dir/sub/deeper.xml"
ctl submit "$T_TMP/dir"
is "$RC" 0 "directory of 20: exit 0"
is "$(grep -Ec ": created $ID_RE\$" "$OUT")" 20 "directory of 20: 20 created"
like "$OUT" "^20 created, 0 existing, 0 conflicts, 0 refused\$" "directory: summary"
is "$(grep -E ': created ' "$OUT" | cut -d: -f1 | tr '\n' ' ')" \
    "$(ls "$T_TMP"/dir/inv-*.xml | tr '\n' ' ')" \
    "directory: *.xml only, in name order, not recursive"

ctl -j submit "$T_TMP/dir/inv-01.xml" "$INVALID" "$T_TMP/missing.xml"
is "$RC" 1 "-j submit with a refusal: exit 1"
ok "-j submit: every line is a JSON object" json_lines "$OUT"
is "$(jfield "$OUT" 'j.get("result", "-")' | tr '\n' ' ')" \
    "exists refused error - " "-j submit: results per file"
is "$(jfield "$OUT" 'j.get("http_status", "-")' | tr '\n' ' ')" \
    "200 422 0 - " "-j submit: HTTP status per file"
like "$OUT" '"rule": ?"nip\.seller\.checksum"' "-j submit: problems as sent"
is "$(tail -n 1 "$OUT" | jfield /dev/stdin \
    '"%(files)d %(created)d %(existing)d %(conflicts)d %(refused)d %(errors)d" % j["summary"]')" \
    "3 0 1 0 1 1" "-j submit: summary object"


ctl show "$ID"
is "$RC" 0 "show: exit 0"
like "$OUT" "^id: +$ID\$" "show: id"
like "$OUT" "^state: +QUEUED\$" "show: state"
like "$OUT" "^seller_nip: +$NIP\$" "show: seller NIP"
like "$OUT" "^number: +$SAMPLE_NUMBER\$" "show: number"
like "$OUT" "^kind: +VAT\$" "show: kind"
like "$OUT" "^issue_date: +2025-10-31\$" "show: issue date"
like "$OUT" "^ksef_number: +-\$" "show: no KSeF number yet"
ctl -j show "$ID"
is "$RC" 0 "-j show: exit 0"
is "$(jfield "$OUT" 'j["id"] + " " + j["number"]')" "$ID $SAMPLE_NUMBER" \
    "-j show: the JSON record"
ctl show "$(echo "$ID" | tr 0-9a-f a-f0-9)"
is "$RC" 1 "show of an unknown id: exit 1"
like "$OUT.err" "no invoice with id" "show of an unknown id: says so"

ctl list --state QUEUED --nip "$NIP"
is "$RC" 0 "list: exit 0"
like "$OUT" '^ID +STATE +NIP +KIND +NUMBER +ISSUED +KSEF NUMBER$' "list: header"
is "$(lines "$OUT")" 22 "list --state QUEUED --nip: 21 invoices"
like "$OUT" "^$(echo "$ID" | cut -c1-16) +QUEUED +$NIP +VAT +$SAMPLE_NUMBER +2025-10-31 +-\$" \
    "list: the sample's row"
like "$OUT" "^[0-9a-f]{16} +QUEUED +$NIP +VAT +CTL/7/2026 " "list: a generated one"
ctl list --state DONE
is "$(lines "$OUT")" 1 "list --state DONE: none"
ctl list --nip 1111111111
is "$RC" 0 "list --nip of another seller: exit 0"
is "$(lines "$OUT")" 1 "list --nip of another seller: none"
ctl list --limit 5
is "$(lines "$OUT")" 6 "list --limit 5: one page"
like "$OUT.err" "more invoices follow: --all shows them, or --after $ID_RE" \
    "list --limit 5: says more follow"
ctl list --limit 5 --all
is "$(lines "$OUT")" 22 "list --limit 5 --all: every page"
is "$(sed 1d "$OUT" | cut -c1-16 | sort -u | wc -l | tr -d ' ')" 21 \
    "list --all: no invoice twice"
ctl -j list --limit 7 --all
ok "-j list: every line is a JSON object" json_lines "$OUT"
is "$(lines "$OUT")" 21 "-j list --all: 21 objects"

NQ=22	# lines of list --state QUEUED: header and every invoice
if command -v script >/dev/null 2>&1; then
	NQ=23
	mkdir "$T_TMP/tty"
	sed "s|<P_2>$SAMPLE_NUMBER</P_2>|<P_2>CTL/TTY/2026</P_2>|" "$SAMPLE" \
	    >"$T_TMP/tty/a.xml"
	cp "$T_TMP/dir/inv-01.xml" "$T_TMP/tty/b.xml"
	script -qc "'$KSEFCTL' -s '$SOCK' submit '$T_TMP/tty'" /dev/null \
	    </dev/null >"$OUT" 2>&1
	tr '\r' '\n' <"$OUT" >"$OUT.tty"
	like "$OUT.tty" '^\[#+\] 2/2 [0-9.]+/s in [0-9]+:[0-9]{2}' \
	    "terminal: progress bar with count and rate"
	like "$OUT.tty" '\] 0/2 0\.0/s ETA ' "terminal: progress bar with ETA"
	unlike "$OUT.tty" ': created ' "terminal: no line per accepted file"
	like "$OUT.tty" '^1 created, 1 existing, 0 conflicts, 0 refused' \
	    "terminal: summary"
else
	pass "terminal # SKIP no script(1)"
fi

# --- the TCP listener with a bearer token --------------------------------

PORT=$(sed -n 's/.*api: listening on .* and 127\.0\.0\.1:\([0-9]*\).*/\1/p' \
    "$KSEFD_LOG" | tail -n 1)
ok "TCP port logged ($PORT)" test -n "$PORT"
"$KSEFCTL" -u "http://127.0.0.1:$PORT" -t "$T_TMP/api.token" list \
    --state QUEUED >"$OUT" 2>"$OUT.err"
is "$?" 0 "TCP with the token: exit 0"
is "$(lines "$OUT")" "$NQ" "TCP with the token: the same list"
KSEFD_TOKEN_FILE=$T_TMP/api.token "$KSEFCTL" -u "http://127.0.0.1:$PORT" \
    show "$ID" >"$OUT" 2>"$OUT.err"
is "$?" 0 "TCP with KSEFD_TOKEN_FILE: exit 0"
"$KSEFCTL" -u "http://127.0.0.1:$PORT" -t "$T_TMP/wrong.token" submit \
    "$SAMPLE" "$T_TMP/dir/inv-02.xml" >"$OUT" 2>"$OUT.err"
is "$?" 1 "TCP with a wrong token: exit 1"
like "$OUT" "^$SAMPLE: error: HTTP 401: .*bearer token" "wrong token: 401 explained"
unlike "$OUT" "inv-02" "wrong token: the rest is not sent"
cat "$OUT" "$OUT.err" >"$OUT.all"
unlike "$OUT.all" "ctl-test-token|not-the-token" "no token in the output"
chmod 640 "$T_TMP/api.token"
"$KSEFCTL" -u "http://127.0.0.1:$PORT" -t "$T_TMP/api.token" list \
    >"$OUT" 2>&1
is "$?" 2 "group-readable token file: exit 2"
like "$OUT" "group or others" "group-readable token file: says why"
chmod 600 "$T_TMP/api.token"

# --- where the socket comes from -----------------------------------------

KSEFD_SOCKET=$SOCK "$KSEFCTL" list --state QUEUED >"$OUT" 2>"$OUT.err"
is "$?" 0 "socket from KSEFD_SOCKET"
"$KSEFCTL" -f "$T_TMP/ksefd.conf" list --state QUEUED >"$OUT" 2>"$OUT.err"
is "$?" 0 "socket from the config file ([api] socket)"
is "$(lines "$OUT")" "$NQ" "socket from the config file: the list"
KSEFD_SOCKET=$T_TMP/elsewhere.sock "$KSEFCTL" -f "$T_TMP/ksefd.conf" list \
    >"$OUT" 2>&1
is "$?" 3 "KSEFD_SOCKET wins over the config file"
"$KSEFCTL" -f "$T_TMP/no-such.conf" list >"$OUT" 2>&1
is "$?" 2 "missing -f config: exit 2"

ok "ksefd stops" ksefd_stop
is "$KSEFD_STATUS" 0 "ksefd exit status 0"
ctl submit "$SAMPLE"
is "$RC" 3 "submit after ksefd stopped: exit 3"
like "$OUT.err" "^ksefctl: cannot reach ksefd at $SOCK: " \
    "after stop: cannot reach ksefd at PATH"

done_testing
