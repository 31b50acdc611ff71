#!/bin/sh
# metrics.sh: GET /metrics and GET /v1/status against ksef-sim.  Invoices go
# through with two forced 429s on the send group; /metrics must parse with a
# strict exposition-format parser (HELP/TYPE before the samples of a family,
# names, labels, escapes, values, no duplicate series, histogram buckets
# cumulative with le="+Inf" equal to _count) and its counters must agree with
# the invoices (ksefctl list), the audit trail (ksefctl audit, when there)
# and the simulator (its 429s).  After a restart the counts are the same.
# A Latarnia FAILURE shows as ksefd_ksef_availability and in status.
# ksefctl status prints the per-context table; -j its JSON.
. "$top_srcdir/tests/lib.sh"
t_tmpdir
. "$top_srcdir/tests/faults_lib.sh"
fl_setup

N=40

# The parser: exposition text on stdin; prints one JSON object
# {"SERIES": value} (SERIES = name{sorted labels}); exit 1 with the reason.
cat >"$T_TMP/prom.py" <<'PY'
import json, math, re, sys
NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*$")
LNAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*$")
def die(n, why):
    print("line %d: %s" % (n, why)); sys.exit(1)
def value(n, s):
    if s in ("+Inf", "-Inf", "NaN"):
        return float(s.replace("Inf", "inf"))
    if not re.match(r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$", s):
        die(n, "bad value %r" % s)
    return float(s)
def labels(n, s):
    out, i = {}, 0
    while i < len(s):
        m = re.match(r'([a-zA-Z_][a-zA-Z0-9_]*)="', s[i:])
        if not m:
            die(n, "bad label at %r" % s[i:])
        k, i, v = m.group(1), i + m.end(), ""
        while True:
            if i >= len(s):
                die(n, "unterminated label value")
            c = s[i]
            if c == "\\":
                e = s[i + 1:i + 2]
                if e not in ("\\", '"', "n"):
                    die(n, "bad escape \\%s" % e)
                v += {"n": "\n"}.get(e, e); i += 2
            elif c == '"':
                i += 1; break
            elif c == "\n":
                die(n, "newline in label value")
            else:
                v += c; i += 1
        if k in out:
            die(n, "label %s twice" % k)
        out[k] = v
        if i < len(s):
            if s[i] != ",":
                die(n, "expected , after label %s" % k)
            i += 1
    return out
text = sys.stdin.read()
if not text.endswith("\n"):
    die(0, "no final newline")
types, helps, series, seen_fams, cur = {}, {}, {}, [], None
hist = {}
for n, line in enumerate(text.split("\n")[:-1], 1):
    if line.startswith("#"):
        p = line.split(" ", 3)
        if len(p) < 3 or p[1] not in ("HELP", "TYPE"):
            continue
        if not NAME.match(p[2]):
            die(n, "bad metric name %r" % p[2])
        fam = p[2]
        if p[1] == "HELP":
            if fam in helps: die(n, "HELP %s twice" % fam)
            helps[fam] = p[3] if len(p) > 3 else ""
        else:
            if fam in types: die(n, "TYPE %s twice" % fam)
            if len(p) < 4 or p[3] not in ("counter", "gauge", "histogram", "summary", "untyped"):
                die(n, "bad TYPE line")
            if fam in seen_fams: die(n, "TYPE %s after its samples" % fam)
            types[fam] = p[3]
        cur = fam
        continue
    if line == "":
        die(n, "empty line")
    m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)( -?[0-9]+)?$", line)
    if not m:
        die(n, "not a sample: %r" % line)
    name, lab, val = m.group(1), labels(n, m.group(3) or ""), value(n, m.group(4))
    fam = name
    if types.get(cur) == "histogram" and name in (cur + "_bucket", cur + "_sum", cur + "_count"):
        fam = cur
    elif types.get(cur) == "counter" and not name.endswith("_total") and name != cur:
        die(n, "sample %s outside its family %s" % (name, cur))
    if fam != cur:
        die(n, "sample %s without HELP/TYPE of its own (current %s)" % (name, cur))
    if fam not in types or fam not in helps:
        die(n, "family %s lacks HELP or TYPE" % fam)
    if types[fam] == "counter" and (not name.endswith("_total") or val < 0):
        die(n, "counter %s must end in _total and be >= 0" % name)
    if fam not in seen_fams:
        seen_fams.append(fam)
    key = name + "{" + ",".join('%s="%s"' % kv for kv in sorted(lab.items())) + "}"
    if key in series:
        die(n, "series %s twice" % key)
    series[key] = val
    if types[fam] == "histogram":
        base = dict(lab); le = base.pop("le", None)
        h = hist.setdefault((fam, tuple(sorted(base.items()))), {"b": [], "n": n})
        if name.endswith("_bucket"):
            if le is None: die(n, "bucket without le")
            h["b"].append((value(n, le), val))
        elif name.endswith("_count"):
            h["count"] = val
        else:
            h["sum"] = val
for fam in types:
    if fam not in helps: die(0, "TYPE %s without HELP" % fam)
for (fam, lab), h in hist.items():
    b = h["b"]
    if not b or b[-1][0] != math.inf: die(h["n"], "%s%s: no +Inf bucket last" % (fam, lab))
    for i in range(1, len(b)):
        if b[i][0] <= b[i - 1][0]: die(h["n"], "%s: le not increasing" % fam)
        if b[i][1] < b[i - 1][1]: die(h["n"], "%s: buckets not cumulative" % fam)
    if "count" not in h or "sum" not in h: die(h["n"], "%s: no _count or _sum" % fam)
    if h["count"] != b[-1][1]: die(h["n"], "%s: +Inf bucket %g != count %g" % (fam, b[-1][1], h["count"]))
json.dump(series, sys.stdout, sort_keys=True)
PY

# scrape FILE: GET /metrics into FILE.txt, parsed into FILE.json.
scrape() {
	curl -sS -f --unix-socket "$T_TMP/ksefd.sock" -D "$1.hdr" \
	    http://ksefd/metrics >"$1.txt" &&
	    python3 "$T_TMP/prom.py" <"$1.txt" >"$1.json"
}

# m FILE SERIES...: the sum of these series of FILE.json (0 when absent).
m() {
	python3 - "$@" <<'PY'
import json, sys
d = json.load(open(sys.argv[1] + ".json"))
print("%g" % sum(d.get(k, 0) for k in sys.argv[2:]))
PY
}

# Self-test of the parser on broken input: it must be able to fail.
printf '# HELP a_total x\n# TYPE a_total counter\na_total{x="1"} 1\na_total{x="1"} 2\n' >"$T_TMP/bad1"
printf '# HELP h x\n# TYPE h histogram\nh_bucket{le="1"} 3\nh_bucket{le="+Inf"} 2\nh_sum 1\nh_count 2\n' >"$T_TMP/bad2"
printf '# HELP g x\n# TYPE g gauge\ng{a="1} 1\n' >"$T_TMP/bad3"
printf '# HELP h x\n# TYPE h histogram\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} 2\nh_sum 1\nh_count 3\n' >"$T_TMP/bad4"
printf 'x 1\n' >"$T_TMP/bad5"
for b in 1 2 3 4 5; do
	ok "the parser refuses broken input $b" sh -c '! python3 "$1" <"$2" >/dev/null' sh \
	    "$T_TMP/prom.py" "$T_TMP/bad$b"
done

ok "simulator starts" fl_sim_start --processing-delay 50ms --auth-delay 0
fl_conf "$T_TMP/ksefd.conf"
ok "ksefd starts" ksefd_start -f "$T_TMP/ksefd.conf"
ok "/metrics before any invoice parses" scrape "$T_TMP/m0"
like "$T_TMP/m0.hdr" '^Content-Type: text/plain; version=0.0.4' \
    "served as text/plain; version=0.0.4"
is "$(m "$T_TMP/m0" 'ksefd_breaker_state{context="5265877635",state="closed"}')" 1 \
    "the breaker is closed"

ok "two 429s armed on invoiceSend (Retry-After 1 s)" fl_sim_faults \
    '{"rules":[{"group":"invoiceSend","kind":"429","ms":1000,"every":1,"count":2}]}'
ok "$N invoices accepted" fl_post MX $N
ok "all $N DONE" wait_until 60 fl_done_is $N
ok "/metrics after the run parses" scrape "$T_TMP/m1"
C='context="5265877635"'
is "$(m "$T_TMP/m1" "ksefd_invoices{$C,state=\"DONE\"}")" $N "ksefd_invoices DONE = $N"
is "$(m "$T_TMP/m1" "ksefd_invoices{$C,state=\"QUEUED\"}" \
    "ksefd_invoices{$C,state=\"SENDING\"}" "ksefd_invoices{$C,state=\"SUBMITTED\"}" \
    "ksefd_invoices{$C,state=\"ACCEPTED\"}")" 0 "no invoice unfinished"
is "$(m "$T_TMP/m1" 'ksefd_transitions_total{from="NONE",to="QUEUED"}')" $N \
    "transitions NONE -> QUEUED = $N"
is "$(m "$T_TMP/m1" 'ksefd_transitions_total{from="ACCEPTED",to="DONE"}')" $N \
    "transitions ACCEPTED -> DONE = $N"
sim429=$(fl_stat faults 429)
is "$(m "$T_TMP/m1" "ksefd_ksef_429_total{$C,group=\"invoice_send\"}")" "$sim429" \
    "429s counted = the simulator's forced 429s ($sim429)"
is "$(m "$T_TMP/m1" "ksefd_retry_after_seconds_count{$C}")" "$sim429" \
    "the Retry-After histogram holds them"
ok "and its sum is at least 1 s each" python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
sys.exit(0 if d["ksefd_retry_after_seconds_sum{context=\"5265877635\"}"] >= 0.9 * int(sys.argv[2]) else 1)' \
    "$T_TMP/m1.json" "$sim429"
sends=$(m "$T_TMP/m1" "ksefd_ksef_requests_total{$C,group=\"invoice_send\"}")
ok "invoice sends counted ($sends) = sends the simulator saw" \
    test "$sends" -eq "$(fl_stat invoices received)" -o "$sends" -ge $N
ok "ACCEPTED answers = $N" test "$(m "$T_TMP/m1" "ksefd_ksef_responses_total{$C,outcome=\"accepted\"}")" -ge $N
ok "commits were timed" test "$(m "$T_TMP/m1" 'ksefd_store_commit_seconds_count{}')" -gt 0
is "$(m "$T_TMP/m1" 'ksefd_requests_in_flight{}')" 0 "no request in flight"
ok "a token with time left" python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
sys.exit(0 if d["ksefd_token_expiry_seconds{context=\"5265877635\"}"] > 0 else 1)' "$T_TMP/m1.json"
ok "limiter headroom for invoice_send" grep -q \
    '^ksefd_limiter_headroom{context="5265877635",group="invoice_send",window="second"} [0-9]' \
    "$T_TMP/m1.txt"

# The audit trail, when ksefctl can print it: every (from, to) pair counted.
if "$KSEFCTL" help audit >/dev/null 2>&1; then
	"$KSEFCTL" -s "$T_TMP/ksefd.sock" audit >"$T_TMP/audit.jsonl" 2>"$T_TMP/audit.err"
	ok "transitions_total agrees with the audit trail" python3 - \
	    "$T_TMP/audit.jsonl" "$T_TMP/m1.json" <<'PY'
import collections, json, sys
a = collections.Counter()
for l in open(sys.argv[1]):
    e = json.loads(l)
    if e["from"] != e["to"]:
        a['ksefd_transitions_total{from="%s",to="%s"}' % (e["from"] or "NONE", e["to"])] += 1
m = {k: v for k, v in json.load(open(sys.argv[2])).items() if k.startswith("ksefd_transitions_total")}
if dict(a) != m:
    print("# audit %s\n# metrics %s" % (sorted(a.items()), sorted(m.items())))
    sys.exit(1)
PY
else
	pass "# SKIP ksefctl has no audit command"
fi

# ksefctl status and -j.
"$KSEFCTL" -s "$T_TMP/ksefd.sock" status >"$T_TMP/status.txt" 2>&1
like "$T_TMP/status.txt" '^context 5265877635: breaker closed, [0-9]+ sessions open, 0 sends in flight, access token expires in [0-9]+ s$' \
    "status: the context line"
like "$T_TMP/status.txt" "^  DONE +$N  -\$" "status: $N DONE"
like "$T_TMP/status.txt" '^  invoice_send +[0-9]+ +[0-9]+ +[0-9]+$' "status: invoice_send headroom"
like "$T_TMP/status.txt" '^last reconciliation: ' "status: the last reconciliation line"
"$KSEFCTL" -s "$T_TMP/ksefd.sock" -j status >"$T_TMP/status.json" 2>&1
ok "status -j: JSON with the same counts" python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
c = d["contexts"][0]
assert c["context"] == "5265877635" and c["states"]["DONE"] == int(sys.argv[2]), c
assert c["breaker"] == "closed" and c["token_expires_in_s"] > 0
assert c["headroom"]["invoice_send"]["second"] >= 0
' "$T_TMP/status.json" $N

# An unfinished invoice shows its age in both.
ok "processing held back: the simulator pauses" fl_sim_faults '{"rules":[{"group":"invoiceSend","kind":"503","every":1,"count":1000}]}'
ok "one more invoice accepted" fl_post MY 1
ok "/metrics shows a queue age" wait_until 10 sh -c '
	curl -sS --unix-socket "$1" http://ksefd/metrics |
	    grep -Eq "^ksefd_queue_oldest_age_seconds\{context=\"5265877635\",state=\"(QUEUED|SENDING)\"\} [0-9]"' \
    sh "$T_TMP/ksefd.sock"
"$KSEFCTL" -s "$T_TMP/ksefd.sock" status >"$T_TMP/status2.txt" 2>&1
like "$T_TMP/status2.txt" '^  (QUEUED|SENDING) +1  [0-9]+:[0-9][0-9]$' "status: the age of the unfinished one"
ok "faults cleared" fl_sim_faults '{"clear":true}'
ok "it completes" wait_until 60 fl_done_is $((N + 1))

# A reconciliation run (when ksefd has POST /v1/reconcile): its summary in
# /metrics and in ksefctl status.
code=$(curl -s -o "$T_TMP/rec.json" -w '%{http_code}' -X POST \
    --unix-socket "$T_TMP/ksefd.sock" http://ksefd/v1/reconcile)
if [ "$code" = 202 ]; then
	ok "a reconciliation's findings show in /metrics" wait_until 30 sh -c '
		curl -sS --unix-socket "$1" http://ksefd/metrics >"$2.txt" &&
		    grep -q "^ksefd_reconcile_last_findings{" "$2.txt"' \
	    sh "$T_TMP/ksefd.sock" "$T_TMP/m-rec"
	ok "/metrics with the reconciliation parses" scrape "$T_TMP/m-rec"
	"$KSEFCTL" -s "$T_TMP/ksefd.sock" status >"$T_TMP/status3.txt" 2>&1
	like "$T_TMP/status3.txt" '^last reconciliation: \{.*"counts"' \
	    "status: the last reconciliation's summary"
else
	pass "# SKIP no POST /v1/reconcile (HTTP $code)"
fi

# KSeF's availability (Latarnia): FAILURE shows in /metrics and status.
latarnia_metric() {
	curl -sS --unix-socket "$T_TMP/ksefd.sock" http://ksefd/metrics 2>/dev/null |
	    grep -q "^ksefd_ksef_availability{status=\"$1\"} 1\$"
}
ok "Latarnia AVAILABLE in /metrics" wait_until 10 latarnia_metric AVAILABLE
ok "Latarnia FAILURE armed" fl_sim_faults '{"latarnia":"FAILURE"}'
ok "Latarnia FAILURE in /metrics" wait_until 10 latarnia_metric FAILURE
ok "/metrics during the outage parses" scrape "$T_TMP/m-out"
is "$(m "$T_TMP/m-out" 'ksefd_ksef_outage{}')" 1 "ksefd_ksef_outage 1"
"$KSEFCTL" -s "$T_TMP/ksefd.sock" status >"$T_TMP/status4.txt" 2>&1
like "$T_TMP/status4.txt" '^KSeF availability \(Latarnia\): FAILURE, sending paused$' \
    "status: the outage"
ok "Latarnia cleared" fl_sim_faults '{"clear":true}'
ok "Latarnia AVAILABLE again in /metrics" wait_until 10 latarnia_metric AVAILABLE

# Restart: counts and transitions come back from the store and the audit.
ok "/metrics before the restart" scrape "$T_TMP/m2"
ok "ksefd stops" ksefd_stop TERM
is "$KSEFD_STATUS" 0 "ksefd exits with status 0"
ok "ksefd starts again" ksefd_start -f "$T_TMP/ksefd.conf"
ok "/metrics after the restart parses" scrape "$T_TMP/m3"
ok "invoices and transitions the same after the restart" python3 -c '
import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:3])
k = [x for x in a if x.startswith(("ksefd_invoices{", "ksefd_transitions_total{"))]
bad = [(x, a[x], b.get(x)) for x in k if a[x] != b.get(x)]
print("# differ:", bad[:5]) if bad else None
sys.exit(1 if bad or not k else 0)' "$T_TMP/m2.json" "$T_TMP/m3.json"

# Method and path.
ok "POST /metrics is 405" sh -c 'test "$(curl -s -o /dev/null -w "%{http_code}" -X POST \
    --unix-socket "$1" http://ksefd/metrics)" = 405' sh "$T_TMP/ksefd.sock"
ok "ksefd stops" ksefd_stop TERM
is "$KSEFD_STATUS" 0 "ksefd exits with status 0"
done_testing
