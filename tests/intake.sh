#!/bin/sh
# intake.sh: the intake API and spool of a running ksefd, black box.
. "$top_srcdir/tests/lib.sh"

t_tmpdir
export KSEFD_SCHEMA_DIR="$top_srcdir/schemas"
VALID=$top_srcdir/tests/data/valid
INVALID=$top_srcdir/tests/data/invalid
LOADGEN=$top_builddir/tests/loadgen
NIP=5265877635

mkdir -p "$T_TMP/tokens"
t_secret "$T_TMP/tokens/$NIP"
t_secret "$T_TMP/api.token" "api-secret-token"
# KSeF is a closed loopback port: nothing leaves the machine, invoices stay QUEUED.
mkconf() {	# mkconf FA2 (yes/no)
	cat >"$T_TMP/ksefd.conf" <<EOF
[log]
level = info
[ksef]
environment = http://127.0.0.1:9/v2
[storage]
database = $T_TMP/db
map_size = 16M
[api]
socket = $T_TMP/ksefd.sock
socket_mode = 0600
listen = 127.0.0.1:0
token_file = $T_TMP/api.token
max_body = 256K
[spool]
directory = $T_TMP/spool
rescan_interval = 1s
[intake]
future_tolerance = 1d
fa2 = $1
[context $NIP]
token_file = $T_TMP/tokens/$NIP
EOF
}
mkconf yes
SOCK=$T_TMP/ksefd.sock

# post FILE [CURL ARGS]: POST over the socket; body in $T_TMP/out, code printed.
post() {
	_f=$1
	shift
	curl -s -o "$T_TMP/out" -w '%{http_code}' --unix-socket "$SOCK" \
	    -H 'Content-Type: application/xml' --data-binary "@$_f" "$@" \
	    http://ksefd/v1/invoices
}
get() {
	curl -s -o "$T_TMP/out" -w '%{http_code}' --unix-socket "$SOCK" "http://ksefd$1"
}
json() {	# json EXPR: evaluate a Python expression over the last answer j
	python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print($1)" "$T_TMP/out"
}
# count_records: how many invoices the API lists, following pages.
count_records() {
	python3 - "$SOCK" <<'PY'
import json, subprocess, sys
n, after = 0, ""
while True:
    q = "/v1/invoices?limit=1000" + ("&after=" + after if after else "")
    out = subprocess.run(["curl", "-s", "--unix-socket", sys.argv[1], "http://ksefd" + q],
                         capture_output=True, check=True).stdout
    j = json.loads(out)
    n += len(j["invoices"])
    if not j["next"]:
        break
    after = j["next"]
print(n)
PY
}

ok "ksefd starts" ksefd_start -f "$T_TMP/ksefd.conf"
ok "API socket exists" test -S "$SOCK"
is "$(stat -c %a "$SOCK")" 600 "socket created with the configured mode"
PORT=$(sed -n 's/.*api: listening on .* and 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$KSEFD_LOG" | tail -n 1)
ok "TCP port logged ($PORT)" test -n "$PORT"

is "$(get /healthz)" 200 "healthz answers"

# Every official FA(3) sample and template is accepted.
for f in "$VALID"/fa3-*.xml "$VALID"/extra-fa3-*.xml; do
	[ -f "$f" ] || continue
	case $f in *attachment*) continue ;; esac	# attachments: batch only
	# Templates share numbers; KSeF's duplicate rule would join them.
	b=$(basename "$f" .xml)
	sed "s#<P_2>[^<]*</P_2>#<P_2>SAMPLE/$b</P_2>#" "$f" >"$T_TMP/sample.xml"
	code=$(post "$T_TMP/sample.xml")
	is "$code" 201 "accepted: $b"
	json 'j["invoice"]["id"]' >>"$T_TMP/posted"
done
# FA(2) only under the test environment.
code=$(post "$VALID/fa2-faktura-online.xml")
is "$code" 201 "FA(2) accepted with intake.fa2 = yes"
ID=$(json 'j["invoice"]["id"]')
echo "$ID" >>"$T_TMP/posted"
is "$(json 'j["result"]')" created "answer says created"
like "$T_TMP/out" '"state": ?"QUEUED"' "new invoice is QUEUED"

is "$(json '" ".join(w["severity"] + ":" + w["rule"] for w in j["warnings"])')" \
    "warning:date.past" "issued in the past: the warning is in the answer"
is "$(json '"message" in j or "error" in j')" False "a plain 201 has no message"

# The same bytes again: 200 with the same record.
code=$(post "$VALID/fa2-faktura-online.xml")
is "$code" 200 "same bytes: 200"
is "$(json 'j["invoice"]["id"]')" "$ID" "same bytes: same id"
is "$(json 'j["result"] + " / " + j["message"]')" \
    "exists / the same invoice was already received" "same bytes: result and message"
curl -s -D "$T_TMP/hdr" -o /dev/null --unix-socket "$SOCK" -H 'Content-Type: application/xml' \
    --data-binary "@$VALID/fa2-faktura-online.xml" http://ksefd/v1/invoices
like "$T_TMP/hdr" "^Location: /v1/invoices/$ID" "answer carries the Location"

# Same number, other bytes: 409 naming the existing record.
sed 's#</Faktura>#<!-- changed --></Faktura>#' "$VALID/fa2-faktura-online.xml" >"$T_TMP/changed.xml"
code=$(post "$T_TMP/changed.xml")
is "$code" 409 "same number, other bytes: 409"
is "$(json 'j["invoice"]["id"]')" "$ID" "409 names the existing record"
like "$T_TMP/out" 'correcting invoice' "409 says a correcting invoice is the way"
is "$(json 'j["result"] + " / " + j["error"]')" "conflict / conflict" "409: result and error"

is "$(get "/v1/invoices/$ID")" 200 "GET one invoice"
is "$(json 'j["id"]')" "$ID" "GET returns it"
is "$(get /v1/invoices/00)" 400 "GET with a malformed id: 400"
is "$(get "/v1/invoices/$(printf '%064d' 0)")" 404 "GET an unknown id: 404"
is "$(get "/v1/invoices?state=QUEUED&nip=$NIP&limit=2")" 200 "list with filters"
is "$(json 'len(j["invoices"])')" 2 "list honours limit"
is "$(get "/v1/invoices?state=BOGUS")" 400 "list with an unknown state: 400"
# The list comes in the order the invoices arrived; after= pages on from one.
get "/v1/invoices?limit=1000" >/dev/null
json '"\n".join(i["id"] for i in j["invoices"])' >"$T_TMP/listed"
ok "list: in the order the invoices arrived ($(wc -l <"$T_TMP/posted"))" \
    cmp -s "$T_TMP/posted" "$T_TMP/listed"
is "$(get "/v1/invoices?limit=1&after=$(sed -n 1p "$T_TMP/posted")")" 200 "list after the first"
is "$(json 'j["invoices"][0]["id"]')" "$(sed -n 2p "$T_TMP/posted")" "it starts at the second"
is "$(get "/v1/invoices?after=$(printf '%064d' 0)")" 400 "list after an unknown id: 400"
is "$(json 'j["error"]')" bad_after "saying after is wrong"

# Bad bodies: specific errors, nothing stored, still serving.
before=$(count_records)
head -c 1000000 /dev/zero | tr '\0' 'x' >"$T_TMP/big.xml"
is "$(post "$T_TMP/big.xml")" 413 "oversized body: 413"
is "$(curl -s -o "$T_TMP/out" -w '%{http_code}' --unix-socket "$SOCK" \
    -H 'Content-Type: application/json' --data-binary "@$VALID/fa2-faktura-online.xml" \
    http://ksefd/v1/invoices)" 415 "wrong content type: 415"
if [ -f "$INVALID/EXPECT" ]; then
	# EXPECT: FILE RULE [LINE] per line (the validate module's corpus).
	grep -v '^#' "$INVALID/EXPECT" >"$T_TMP/expect"
	while read -r f rule line rest; do
		[ -n "$f" ] || continue
		[ -f "$INVALID/$f" ] || continue
		# The corpus dates date.future against a fixed day; see below.
		[ "$rule" = date.future ] && continue
		code=$(post "$INVALID/$f")
		if [ "$code" = 413 ]; then
			is "$rule" body.too_large "refused $f: 413"
			continue
		fi
		is "$code" 422 "refused $f: 422"
		got=$(json '" ".join("%s@%d" % (p["rule"], p["line"]) for p in j["problems"])')
		case " $got " in
		*" $rule@$line "*) pass "refused $f with rule $rule at line $line" ;;
		*) fail "refused $f with rule $rule at line $line"; diag "got: $got" ;;
		esac
	done <"$T_TMP/expect"
else
	for f in "$INVALID"/*.xml; do
		is "$(post "$f")" 422 "refused: $(basename "$f")"
	done
fi
# An issue date a month from now is refused as date.future.
future=$(date -d '+30 days' +%Y-%m-%d)
sed "s#<P_1>[^<]*</P_1>#<P_1>$future</P_1>#" "$VALID/fa3-csharp-invoice-template-fa-3.xml" >"$T_TMP/future.xml"
is "$(post "$T_TMP/future.xml")" 422 "issue date $future refused"
like "$T_TMP/out" '"rule": ?"date.future"' "refused as date.future"
for f in "$INVALID"/doctype.xml "$INVALID"/billion-laughs.xml; do
	[ -f "$f" ] || continue
	post "$f" >/dev/null
	like "$T_TMP/out" '"rule": ?"xml.doctype"' "$(basename "$f"): refused as xml.doctype"
done
is "$(count_records)" "$before" "nothing stored by refused bodies"
ok "daemon still serving" ksefd_alive

# Loopback TCP requires the bearer token.
T=http://127.0.0.1:$PORT/v1/invoices
is "$(curl -s -o /dev/null -w '%{http_code}' "$T/$ID")" 401 "TCP without a token: 401"
is "$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer wrong' "$T/$ID")" 401 \
    "TCP with a wrong token: 401"
is "$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer api-secret-token' "$T/$ID")" 200 \
    "TCP with the token: 200"

# 1000 concurrent POSTs of 800 distinct invoices: exactly 800 records.
before=$(count_records)
"$LOADGEN" -s "$SOCK" -t "$VALID/fa3-csharp-invoice-template-fa-3.xml" -c 100 -n 1000 -d 800 \
    -p "CONC" >"$T_TMP/out"
like "$T_TMP/out" '"errors":0' "loadgen: no transport errors"
is "$(json 'j["status"].get("201", 0)')" 800 "800 created"
is "$(json 'j["status"].get("200", 0)')" 200 "200 repeats answered 200"
is "$(count_records)" $((before + 800)) "exactly 800 new records"

# Spool: 1000 files dropped while running, all accepted, none twice.
before=$(count_records)
mkdir -p "$T_TMP/gen"
python3 - "$VALID/fa3-csharp-invoice-template-fa-3.xml" "$T_TMP/gen" 1000 SPOOL <<'PY'
import re, sys
src, out, n, pfx = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
x = open(src, encoding="utf-8").read()
for i in range(n):
    open("%s/inv%04d.xml" % (out, i), "w", encoding="utf-8").write(
        re.sub(r"<P_2>[^<]*</P_2>", "<P_2>%s/%d</P_2>" % (pfx, i), x))
PY
for f in "$T_TMP"/gen/*.xml; do
	b=$(basename "$f" .xml)
	cp "$f" "$T_TMP/spool/incoming/$b.tmp"
	mv "$T_TMP/spool/incoming/$b.tmp" "$T_TMP/spool/incoming/$b.xml"
done
echo '<garbage' >"$T_TMP/spool/incoming/.hidden.xml"
spool_left() { ls "$T_TMP/spool/incoming" | grep -v '^\.' | grep -c . ; }
wait_until 60 sh -c "[ \$(ls '$T_TMP/spool/incoming' | grep -vc '^\.') -eq 0 ]"
is "$(spool_left)" 0 "spool: incoming/ drained"
is "$(ls "$T_TMP/spool/accepted" | grep -c '\.xml$')" 1000 "spool: 1000 files in accepted/"
is "$(ls "$T_TMP/spool/refused" | grep -c . )" 0 "spool: none refused"
ok "spool: dotfile left alone" test -f "$T_TMP/spool/incoming/.hidden.xml"
is "$(count_records)" $((before + 1000)) "spool: exactly 1000 new records"

# A refused spool file goes to refused/ with its explanation.
cp "$INVALID/empty.xml" "$T_TMP/spool/incoming/bad.tmp"
mv "$T_TMP/spool/incoming/bad.tmp" "$T_TMP/spool/incoming/bad.xml"
wait_until 10 test -f "$T_TMP/spool/refused/bad.xml.err"
ok "spool: refused file moved" test -f "$T_TMP/spool/refused/bad.xml"
like "$T_TMP/spool/refused/bad.xml.err" '"rule": "' "spool: .err names the rule"

# Reload with intake.fa2 = no (as under demo and prod): FA(2) is refused from then on.
mkconf no
kill -HUP "$KSEFD_PID"
wait_log "$KSEFD_LOG" 'reloaded configuration'
sed 's#<P_2>\([^<]*\)</P_2>#<P_2>\1-demo</P_2>#' "$VALID/fa2-faktura-online.xml" >"$T_TMP/fa2b.xml"
is "$(post "$T_TMP/fa2b.xml")" 422 "FA(2) refused after a reload with intake.fa2 = no"
like "$T_TMP/out" 'form\.' "refusal names the form rule"
mkconf yes
kill -HUP "$KSEFD_PID"

# SIGKILL right after a 201: the record is there after a restart.
sed 's#<P_2>\([^<]*\)</P_2>#<P_2>KILL/1</P_2>#' "$VALID/fa3-csharp-invoice-template-fa-3.xml" >"$T_TMP/kill.xml"
is "$(post "$T_TMP/kill.xml")" 201 "created just before SIGKILL"
KID=$(json 'j["invoice"]["id"]')
kill -KILL "$KSEFD_PID"
wait_until 10 test -s "$T_TMP/ksefd.status"
KSEFD_PID=
ok "ksefd restarts after SIGKILL" ksefd_start -f "$T_TMP/ksefd.conf"
is "$(get "/v1/invoices/$KID")" 200 "the acknowledged record survived SIGKILL"

# SIGKILL in the middle of a spool run: every file accepted exactly once.
before=$(count_records)
rm -rf "$T_TMP/gen"; mkdir -p "$T_TMP/gen"
python3 - "$VALID/fa3-csharp-invoice-template-fa-3.xml" "$T_TMP/gen" 10000 KSPOOL <<'PY'
import re, sys
src, out, n, pfx = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
x = open(src, encoding="utf-8").read()
for i in range(n):
    open("%s/k%04d.xml" % (out, i), "w", encoding="utf-8").write(
        re.sub(r"<P_2>[^<]*</P_2>", "<P_2>%s/%d</P_2>" % (pfx, i), x))
PY
mv "$T_TMP"/gen/*.xml "$T_TMP/spool/incoming/"
wait_until 20 sh -c "[ \$(ls '$T_TMP/spool/accepted' | grep -c '^k') -ge 1 ]"
kill -KILL "$KSEFD_PID"
wait_until 10 test -s "$T_TMP/ksefd.status"
KSEFD_PID=
mid=$(ls "$T_TMP/spool/accepted" | grep -c '^k')
diag "killed with $mid of 10000 spool files accepted"
ok "the kill came in the middle of the run" test "$mid" -lt 10000
ok "ksefd restarts after SIGKILL mid-spool" ksefd_start -f "$T_TMP/ksefd.conf"
wait_until 60 sh -c "[ \$(ls '$T_TMP/spool/incoming' | grep -vc '^\.') -eq 0 ]"
is "$(ls "$T_TMP/spool/accepted" | grep -c '^k')" 10000 "mid-spool kill: all 10000 accepted"
is "$(ls "$T_TMP/spool/accepted" | grep -c '^k.*\.xml\.[0-9]')" 0 "mid-spool kill: no file accepted twice"
is "$(count_records)" $((before + 10000)) "mid-spool kill: exactly 10000 new records"

ok "SIGTERM stops ksefd" ksefd_stop TERM
is "$KSEFD_STATUS" 0 "exit status 0"
done_testing
