#!/bin/sh
# pipeline.sh: the submission pipeline end to end — the real ksefd against
# ksef-sim over TLS (throwaway CA), asserting on ksefd's stored state
# (ksefctl -j) and on the simulator's /_sim/ endpoints:
#  1. happy path: 500 invoices over two contexts, all DONE, each registered
#     once by the simulator, every stored UPO naming its hash and number;
#  2. access tokens living 4 s during a longer, rate-limited run, refreshed
#     ahead of expiry, then all expired at once: nothing FAILED, no 401
#     but after that forced expiry, no request started after a 401 before
#     a new token came, one re-authentication per context;
#  3. a rejected invoice: REJECTED with KSeF's code and details; its
#     correction supersedes it and reaches DONE;
#  4. duplicates pre-registered in the simulator: same bytes -> the
#     original KSeF number, other bytes -> FAILED with reason conflict;
#  5. garbage from KSeF on the send and status endpoints: transient
#     handling with a log line, no crash, everything DONE afterwards.
# Every simulator and ksefd is stopped at exit (trap); only 127.0.0.1.
. "$top_srcdir/tests/lib.sh"
FL_NIP=5265877635	# the seller of the official FA(3) sample
. "$top_srcdir/tests/faults_lib.sh"

LOADGEN=$FL_LOADGEN
TEMPLATE=$FL_TEMPLATE
NIP1=$FL_NIP
NIP2=1234563218		# a second context (valid checksum)

t_tmpdir
fl_setup		# CA, certificate, $T_TMP/token for NIP1; stops all at exit

# --- the simulator (tests/faults_lib.sh) ------------------------------------

# sim_start ARGS...: a fresh ksef-sim taking the tokens of both contexts.
sim_start() {
	fl_sim_start --token "$NIP2:$(cat "$T_TMP/tok2")" --auth-delay 0 "$@"
}

# sim_stop: TERM the simulator; its exit status in SIM_STATUS.
sim_stop() {
	[ -n "$FL_SIM_PID" ] || return 0
	kill -TERM "$FL_SIM_PID" 2>/dev/null
	wait "$FL_SIM_PID" 2>/dev/null
	SIM_STATUS=$?
	FL_SIM_PID=
}

# --- ksefd ----------------------------------------------------------------

# pipe_conf NAME [EXTRA]: fl_conf's config in $T_TMP/NAME.conf with a new
# database, both contexts, LIMITS ([limits] enabled, default no),
# REFRESH_MARGIN and LOG_TRACE; EXTRA lines are appended.
pipe_conf() {
	rm -rf "$T_TMP/db"
	FL_TRACE=${LOG_TRACE:-} fl_conf "$T_TMP/$1.conf" "[ksef]
request_timeout = 5s
token_refresh_margin = ${REFRESH_MARGIN:-60s}
[session]
idle_timeout = 10s
[limits]
enabled = ${LIMITS:-no}
[context $NIP2]
token_file = $T_TMP/tok2
${2:-}"
}

# pipe_start NAME: ksefd on $T_TMP/NAME.conf, with a fresh log.
pipe_start() {
	: >"$T_TMP/ksefd.log"
	ksefd_start -f "$T_TMP/$1.conf"
}

# pipe_stop NAME: TERM ksefd and the simulator, keeping ksefd's log as
# $T_TMP/NAME.log; both must exit with status 0 (no leak under ASan).
pipe_stop() {
	ksefd_stop TERM || ksefd_stop KILL
	cp "$T_TMP/ksefd.log" "$T_TMP/$1.log"
	is "$KSEFD_STATUS" 0 "$1: ksefd exits cleanly"
	sim_stop
	is "$SIM_STATUS" 0 "$1: the simulator exits cleanly"
}

# wait_ksefd SECS CMD...: wait_until that gives up at once when ksefd died.
wait_ksefd() {
	_w=$(($1 * 20))
	shift
	while [ "$_w" -gt 0 ]; do
		"$@" && return 0
		ksefd_alive || { diag "ksefd is not running"; return 1; }
		sleep 0.05
		_w=$((_w - 1))
	done
	"$@"
}

ctl() {
	"$KSEFCTL" -s "$T_TMP/ksefd.sock" "$@"
}

# state_counts: "STATE N" lines over every stored invoice, sorted.
state_counts() {
	ctl -j list --all | python3 -c '
import collections, json, sys
c = collections.Counter(json.loads(l)["state"] for l in sys.stdin if l.strip())
print(" ".join("%s=%d" % kv for kv in sorted(c.items())))'
}

# all_in STATE N: exactly N invoices are stored and all are in STATE.
all_in() {
	[ "$(state_counts)" = "$1=$2" ]
}

# gen PREFIX NIP N DIR: N invoices of seller NIP, P_2 = PREFIX/i, in DIR.
gen() {
	mkdir -p "$4"
	python3 - "$TEMPLATE" "$@" <<'PY'
import re, sys
src, pfx, nip, n, out = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
x = open(src, encoding="utf-8").read().replace("5265877635", nip)
for i in range(n):
    open("%s/%05d.xml" % (out, i), "w", encoding="utf-8").write(
        re.sub(r"<P_2>[^<]*</P_2>", "<P_2>%s/%d</P_2>" % (pfx, i), x))
PY
}

# Every stored UPO, read through the API, names its invoice's hash (Base64
# SHA-256 of the XML), KSeF number, seller and number.
UPO_CHECK='
import base64, http.client, json, socket, sys
import xml.etree.ElementTree as ET
class Unix(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(sys.argv[1])
ns = "{http://upo.schematy.mf.gov.pl/KSeF/v4-3}"
conn = Unix("localhost")
good = bad = 0
for l in open(sys.argv[2]):
    if not l.strip():
        continue
    o = json.loads(l)
    conn.request("GET", "/v1/invoices/%s/upo" % o["id"])
    r = conn.getresponse()
    body = r.read()
    try:
        d = ET.fromstring(body).find(ns + "Dokument")
        want = {"SkrotDokumentu": base64.b64encode(bytes.fromhex(o["sha256"])).decode(),
                "NumerKSeFDokumentu": o["ksef_number"], "NipSprzedawcy": o["seller_nip"],
                "NumerFaktury": o["number"]}
        miss = [k for k, v in want.items() if d.findtext(ns + k) != v]
    except Exception as e:
        miss = ["unparsable: %s" % e]
    if r.status != 200 or miss:
        bad += 1
        if bad <= 3:
            print("bad", o["id"], r.status, miss, body[:200])
    else:
        good += 1
print("upo good", good, "bad", bad)
'

# --- setup ----------------------------------------------------------------

t_secret "$T_TMP/tok2" "20250101-EC-0000000002-0000000002-02|nip-$NIP2|pipeline-2"
sed "s/$NIP1/$NIP2/" "$TEMPLATE" >"$T_TMP/template2.xml"

# --- 1. happy path --------------------------------------------------------

ok "happy: simulator starts" sim_start --limits off --processing-delay 20ms
pipe_conf happy
ok "happy: ksefd starts with two contexts" pipe_start happy
"$LOADGEN" -s "$T_TMP/ksefd.sock" -t "$TEMPLATE" -c 16 -n 250 -d 250 \
    -p HAPPY-A >"$T_TMP/lg1" 2>&1
"$LOADGEN" -s "$T_TMP/ksefd.sock" -t "$T_TMP/template2.xml" -c 16 -n 250 \
    -d 250 -p HAPPY-B >"$T_TMP/lg2" 2>&1
like "$T_TMP/lg1" '"201":250' "happy: 250 invoices of $NIP1 created"
like "$T_TMP/lg2" '"201":250' "happy: 250 invoices of $NIP2 created"
ok "happy: all 500 DONE" wait_ksefd 40 all_in DONE 500
diag "states: $(state_counts)"
fl_sim GET invoices >"$T_TMP/sim-inv.json"
ctl -j list --all >"$T_TMP/list.json"
python3 - "$T_TMP/sim-inv.json" "$T_TMP/list.json" >"$T_TMP/happy.check" <<'PY'
import collections, json, sys
sim = json.load(open(sys.argv[1]))
ours = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
per = collections.Counter((i["nip"], i["number"]) for i in sim["invoices"])
print("total", sim["count"], len(sim["invoices"]))
print("twice", sum(1 for v in per.values() if v != 1))
byk = {i["ksefNumber"]: i for i in sim["invoices"]}
bad = 0
for o in ours:
    s = byk.get(o.get("ksef_number"))
    if s is None or s["nip"] != o["seller_nip"] or s["number"] != o["number"]:
        bad += 1
print("mismatch", bad)
PY
like "$T_TMP/happy.check" '^total 500 500$' "happy: the simulator registered 500 invoices"
like "$T_TMP/happy.check" '^twice 0$' "happy: each (NIP, number) exactly once"
like "$T_TMP/happy.check" '^mismatch 0$' "happy: every stored KSeF number is the simulator's for that invoice"
python3 -c "$UPO_CHECK" "$T_TMP/ksefd.sock" "$T_TMP/list.json" >"$T_TMP/upo.check" 2>&1
like "$T_TMP/upo.check" '^upo good 500 bad 0$' "happy: all 500 stored UPOs name their invoice hash and KSeF number"

pipe_stop happy

# --- 2. access tokens that live 4 s ----------------------------------------

# 10 sends per second and context (limiter windows of 1 s) make this run
# last about 6 s: tokens are refreshed ahead of expiry (margin 2 s), and
# once both contexts have refreshed, every token is expired at once while
# invoices are in flight.  From ksefd's ksef trace, per context: no 401
# before that forced expiry; after a 401 no request starts until a new
# token came; one authentication from scratch per expiry.
ok "ttl: simulator starts" sim_start --limits off --processing-delay 20ms \
    --access-ttl 4s
LIMITS=yes REFRESH_MARGIN=2s LOG_TRACE=ksef pipe_conf ttl "[limits]
windows = 1s 1s 1s
invoice_send = 10 - -"
ok "ttl: ksefd starts" pipe_start ttl
"$LOADGEN" -s "$T_TMP/ksefd.sock" -t "$TEMPLATE" -c 4 -n 60 -d 60 \
    -p TTL-A >"$T_TMP/lg1" 2>&1
"$LOADGEN" -s "$T_TMP/ksefd.sock" -t "$T_TMP/template2.xml" -c 4 -n 60 \
    -d 60 -p TTL-B >"$T_TMP/lg2" 2>&1
both_refreshed() {
	grep -q "ksef: $NIP1: access token refreshed" "$KSEFD_LOG" &&
	    grep -q "ksef: $NIP2: access token refreshed" "$KSEFD_LOG"
}
ok "ttl: both contexts refreshed their tokens ahead of expiry" \
    wait_ksefd 20 both_refreshed
mark=$(wc -l <"$KSEFD_LOG")
ok "ttl: every token expired at once, mid-run" fl_sim_faults '{"expireTokens":true}'
ok "ttl: all 120 DONE, none FAILED" wait_ksefd 40 all_in DONE 120
diag "states: $(state_counts)"
fl_sim GET stats >"$T_TMP/stats.json"
pipe_stop ttl
python3 - "$T_TMP/ttl.log" "$mark" "$NIP1" "$NIP2" >"$T_TMP/ttl.check" <<'PY'
import re, sys
log, mark, nips = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
auth_ops = ("authenticate", "token refresh", "keys")
alive = dict.fromkeys(nips, True)
n401, early, auths, refr, bad = [dict.fromkeys(nips, 0) for _ in range(5)]
for no, line in enumerate(open(log, encoding="utf-8", errors="replace"), 1):
    m = re.search(r" ksef: (\d{10}): (.*)$", line)
    if not m or m.group(1) not in alive:
        continue
    nip, rest = m.groups()
    op = rest.split(":", 1)[0]
    if rest.startswith("authenticated:"):
        auths[nip] += 1
        alive[nip] = True
    elif rest.startswith("access token refreshed:"):
        refr[nip] += 1
        alive[nip] = True
    elif op not in auth_ops and "(401)" in rest:
        n401[nip] += 1
        early[nip] += no <= mark
        alive[nip] = False
    elif (op not in auth_ops and not alive[nip] and
          re.match(r"[a-z ]+: (GET|POST|PUT|DELETE) /", rest)):
        bad[nip] += 1
for n in nips:
    print(n, "401s", n401[n], "before-forced", early[n], "started-after-401", bad[n],
          "authentications", auths[n], "refreshes", refr[n])
PY
diag "$(cat "$T_TMP/ttl.check")"
for n in $NIP1 $NIP2; do
	like "$T_TMP/ttl.check" "^$n 401s [1-9][0-9]* before-forced 0 " \
	    "ttl: $n: no 401 while tokens expired by their TTL, some after the forced expiry"
	like "$T_TMP/ttl.check" "^$n .* started-after-401 0 " \
	    "ttl: $n: after a 401 no request started before a new token"
	like "$T_TMP/ttl.check" "^$n .* authentications 2 " \
	    "ttl: $n: one authentication at start and one after the forced expiry"
done
like "$T_TMP/stats.json" '"authentications":4[,}]' "ttl: the simulator saw 4 authentications"
like "$T_TMP/stats.json" '"received":120,' "ttl: the simulator received 120 invoices, none twice"

# --- 3. rejection and correction; 4. duplicates ---------------------------

ok "one simulator for the rest" sim_start --limits off --processing-delay 20ms
pipe_conf rest
ok "ksefd starts" pipe_start rest

# one FILE PREFIX NIP: one invoice of seller NIP with P_2 = PREFIX/0 in FILE.
one() {
	rm -rf "$T_TMP/one"
	gen "$2" "$3" 1 "$T_TMP/one"
	mv "$T_TMP/one/00000.xml" "$1"
}

# submit FILE: ksefctl -j submit; its JSON line in $T_TMP/submit.json.
submit() {
	ctl -j submit "$1" >"$T_TMP/submit.json"
}

# field ID EXPR: a Python expression over j (ksefctl -j show ID), printed.
field() {
	ctl -j show "$1" | python3 -c '
import json, sys
j = json.loads(sys.stdin.readline())
print(eval(sys.argv[1]))' "$2"
}

state_is() {
	[ "$(field "$1" 'j["state"]')" = "$2" ]
}

# id_of: the invoice id in $T_TMP/submit.json (its first line).
id_of() {
	python3 -c 'import json, sys
print(json.loads(open(sys.argv[1]).readline())["invoice"]["id"])' \
	    "$T_TMP/submit.json"
}

ok "reject: simulator rejects numbers REJ/..." fl_sim_faults '{"rejectPattern":"^REJ/"}'
one "$T_TMP/rej.xml" REJ $NIP1
ok "reject: submitted" submit "$T_TMP/rej.xml"
REJ_ID=$(id_of)
ok "reject: REJECTED" wait_ksefd 20 state_is "$REJ_ID" REJECTED
is "$(field "$REJ_ID" 'j["error"]["code"]')" 450 "reject: KSeF's code 450 stored"
is "$(field "$REJ_ID" '"reject-pattern" in j["error"]["details"] and "REJ/0" in j["error"]["details"]')" \
    True "reject: KSeF's details stored (they name the invoice number)"
is "$(field "$REJ_ID" 'bool(j["error"]["description"])')" True \
    "reject: KSeF's description stored"
ok "reject: the simulator takes REJ/... again" fl_sim_faults '{"rejectPattern":""}'
# The correction: same seller, kind and number, another buyer phone number.
sed 's/76-113-42-55/76-113-42-56/' "$T_TMP/rej.xml" >"$T_TMP/rej-fixed.xml"
ok "correction: submitted" submit "$T_TMP/rej-fixed.xml"
like "$T_TMP/submit.json" '"http_status": ?201' "correction: 201 created"
like "$T_TMP/submit.json" '"message": ?"stored as the correction of a rejected invoice"' \
    "correction: the answer says what it replaced"
FIX_ID=$(id_of)
is "$(field "$FIX_ID" 'j.get("supersedes")')" "$REJ_ID" "correction: supersedes the rejected one"
is "$(field "$REJ_ID" 'j.get("superseded_by")')" "$FIX_ID" "reject: superseded by the correction"
ok "correction: DONE" wait_ksefd 20 state_is "$FIX_ID" DONE
is "$(field "$REJ_ID" 'j["state"]')" REJECTED "reject: stays REJECTED"

# Duplicates registered in the simulator before ksefd sends them.
one "$T_TMP/dup-same.xml" DUP-SAME $NIP1
ORIG=$(fl_sim POST invoices --data-binary "@$T_TMP/dup-same.xml" | python3 -c '
import json, sys; print(json.load(sys.stdin)["ksefNumber"])')
ok "dup: the simulator took the original ($ORIG)" test -n "$ORIG"
ok "dup (same bytes): submitted" submit "$T_TMP/dup-same.xml"
SAME_ID=$(id_of)
ok "dup (same bytes): DONE" wait_ksefd 20 state_is "$SAME_ID" DONE
is "$(field "$SAME_ID" 'j["ksef_number"]')" "$ORIG" "dup (same bytes): the original KSeF number"
ctl -j show "$SAME_ID" >"$T_TMP/same.json"
ctl -j show "$FIX_ID" >>"$T_TMP/same.json"
python3 -c "$UPO_CHECK" "$T_TMP/ksefd.sock" "$T_TMP/same.json" >"$T_TMP/upo.check" 2>&1
like "$T_TMP/upo.check" '^upo good 2 bad 0$' \
    "dup (same bytes) and correction: their UPOs name their hash and KSeF number"
one "$T_TMP/dup-diff.xml" DUP-DIFF $NIP1
sed 's/76-113-42-55/76-113-42-57/' "$T_TMP/dup-diff.xml" >"$T_TMP/dup-other.xml"
ORIG2=$(fl_sim POST invoices --data-binary "@$T_TMP/dup-other.xml" | python3 -c '
import json, sys; print(json.load(sys.stdin)["ksefNumber"])')
ok "dup: the simulator took other bytes under DUP-DIFF/0 ($ORIG2)" test -n "$ORIG2"
ok "dup (other bytes): submitted" submit "$T_TMP/dup-diff.xml"
DIFF_ID=$(id_of)
ok "dup (other bytes): FAILED" wait_ksefd 20 state_is "$DIFF_ID" FAILED
is "$(field "$DIFF_ID" '(j.get("error") or {}).get("description", "").startswith("conflict")')" True \
    "dup (other bytes): reason conflict"
is "$(field "$DIFF_ID" 'j["ksef_number"]')" None "dup (other bytes): no KSeF number taken over"
fl_sim GET invoices >"$T_TMP/sim-inv.json"
python3 - "$T_TMP/sim-inv.json" "$NIP1" >"$T_TMP/dup.check" <<'PY'
import collections, json, sys
c = collections.Counter(i["number"] for i in json.load(open(sys.argv[1]))["invoices"]
                        if i["nip"] == sys.argv[2])
print(" ".join("%s=%d" % (k, c[k]) for k in ("REJ/0", "DUP-SAME/0", "DUP-DIFF/0")))
PY
like "$T_TMP/dup.check" '^REJ/0=1 DUP-SAME/0=1 DUP-DIFF/0=1$' \
    "the simulator holds one correction, one DUP-SAME and one DUP-DIFF"

# --- 5. garbage from KSeF -------------------------------------------------

# For each garbage kind of the simulator (the request is processed, then
# its answer mangled: cut in half, JSON values of the wrong types, an HTML
# page, 20 MB), first on the send, then on the status endpoints: new
# invoices meet it until it fired a few times and ksefd logged it; ksefd
# stays up.  With the faults removed, every one of them reaches DONE,
# registered once by the simulator.


# fired KIND N LINES: KIND fired N times, and ksefd's log grew by a line
# about an unusable reply after line LINES.
fired() {
	[ "$(fl_stat faults "$1")" -ge "$2" ] &&
	    tail -n "+$(($3 + 1))" "$KSEFD_LOG" |
	    grep -Eq 'ksef: .*(unusable reply|reply over the size cap)'
}

# prefix_in STATE PREFIX N: N invoices numbered PREFIX..., all in STATE.
prefix_in() {
	[ "$(ctl -j list --all | python3 -c '
import json, sys
st, pfx = sys.argv[1], sys.argv[2]
inv = [json.loads(l) for l in sys.stdin if l.strip()]
inv = [i for i in inv if (i.get("number") or "").startswith(pfx)]
print(len(inv) if all(i["state"] == st for i in inv) else -1)' "$1" "$2")" = "$3" ]
}

n=0
for where in send status; do
	case $where in
	send) groups=invoiceSend ;;
	status) groups="sessionInvoiceList invoiceStatus" ;;
	esac
	for kind in truncated wrong-types html huge; do
		rules=
		for g in $groups; do
			rules="$rules${rules:+,}{\"group\":\"$g\",\"kind\":\"$kind\"}"
		done
		before=$(fl_stat faults "$kind")
		lines=$(wc -l <"$KSEFD_LOG")
		ok "garbage: $kind on $where" fl_sim_faults "{\"clear\":true,\"rules\":[$rules]}"
		"$LOADGEN" -s "$T_TMP/ksefd.sock" -t "$TEMPLATE" -c 2 -n 3 -d 3 \
		    -p "GARB-$where-$kind" >"$T_TMP/lg1" 2>&1
		n=$((n + 3))
		ok "garbage: $kind on $where: fired, ksefd logged it" \
		    wait_ksefd 20 fired "$kind" $((before + 2)) "$lines"
		ok "garbage: $kind on $where: ksefd still runs" ksefd_alive
	done
done
ok "garbage: faults removed" fl_sim_faults '{"clear":true}'
ok "garbage: all $n invoices DONE" wait_ksefd 40 prefix_in DONE GARB- "$n"
fl_sim GET invoices >"$T_TMP/sim-inv.json"
python3 - "$T_TMP/sim-inv.json" >"$T_TMP/garb.check" <<'PY'
import collections, json, sys
c = collections.Counter(i["number"] for i in json.load(open(sys.argv[1]))["invoices"]
                        if i["number"].startswith("GARB-"))
print("garbage", len(c), "twice", sum(1 for v in c.values() if v != 1))
PY
like "$T_TMP/garb.check" "^garbage $n twice 0\$" \
    "garbage: the simulator registered each of the $n once"
grep -E 'ksef: .*(unusable reply|reply over the size cap)' "$KSEFD_LOG" |
    sed 's/^[^ ]* //; s/body: .*/body: .../' | sort | uniq -c | sort -rn | head -n 12 |
    while read -r line; do diag "$line"; done

pipe_stop rest

done_testing
