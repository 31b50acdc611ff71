#!/bin/sh
# sim_negative.sh: ksef-sim's answers to bad input, its limits and its faults,
# each observable as configured: bad token, wrong hash and size, schema-invalid
# invoice, duplicate (440 with the original number), 429 with a Retry-After that
# grows, the hourly window through scaled windows, every fault kind, outages and
# Latarnia, expired tokens, key rotation (21470), config-file faults and errors.
. "$top_srcdir/tests/sim/client.sh"
NIP=5265877635
NIP2=1234563218
TOKEN="neg-token-$NIP|secret"
TOKEN2="neg-token-$NIP2|secret"
SAMPLE=$top_srcdir/tests/sim/data/fa3-sample.xml

excode() {	# the exception code of a legacy 400 body
	jget "['exception']['exceptionDetailList'][0]['exceptionCode']"
}
faults() {	# faults JSON: POST /_sim/faults
	printf '%s' "$1" > "$T/faults.json"
	AUTH= req POST /_sim/faults "$T/faults.json"
	[ "$STATUS" = 200 ] || diag "faults: $STATUS $(cat "$T/body")"
}

ok "ksef-sim starts" sim_start --token "$NIP:$TOKEN" --token "$NIP2:$TOKEN2" \
	--processing-delay 0 --auth-delay 0 --limits off --seed 7
ok "keys" fetch_keys

# --- authentication
auth_start "$NIP" "wrong-token"
wait_until 5 auth_done
is "$(jget "['status']['code']")" 450 "bad token: auth status 450"
is "$(jget "['status']['details'][0]")" "Nieprawidłowy token" "bad token: detail"
AUTH=$AUTHTOK req POST /auth/token/redeem
is "$STATUS/$(excode)" 400/21301 "bad token: redeem refused with 21301"
auth_start "$NIP2" "$TOKEN"
wait_until 5 auth_done
is "$(jget "['status']['code']")" 450 "token of another context: 450"
printf '{"challenge":"20250514-CR-226FB7B000-3ACF9BE4C0-10","contextIdentifier":{"type":"Nip","value":"%s"},"encryptedToken":"AAAA"}' \
	"$NIP" > "$T/a.json"
AUTH= req POST /auth/ksef-token "$T/a.json"
is "$STATUS/$(excode)" 400/21111 "unknown challenge: 21111"
AUTH= req POST /auth/ksef-token "$T/a.json" -H "X-Error-Format: problem-details"
is "$(hdr Content-Type)" application/problem+json "problem-details on request"
is "$(jget "['errors'][0]['code']")/$(jget "['status']")" 21111/400 "problem+json errors[0].code"
printf '{"challenge": ' > "$T/bad.json"
AUTH= req POST /auth/ksef-token "$T/bad.json"
is "$STATUS/$(excode)" 400/21405 "malformed JSON: 21405"
check_detail() { jget "['exception']['exceptionDetailList'][0]['details'][0]" | grep -q "$1"; }
ok "malformed JSON: detail names the position" check_detail "linia 1"
printf '{"challenge":"x","contextIdentifier":{"type":"Nip","value":"%s"}}' "$NIP" > "$T/a.json"
AUTH= req POST /auth/ksef-token "$T/a.json"
is "$STATUS/$(excode)" 400/21405 "missing encryptedToken: 21405"
ok "missing field named" check_detail "encryptedToken"
AUTH= req GET /sessions/20250101-SO-0000000000-0000000000-00
is "$STATUS" 401 "no bearer token: 401"
is "$(hdr Content-Type)" application/problem+json "401 is problem+json"
ok "login" ksef_login "$NIP" "$TOKEN"
ACCESS1=$ACCESS

# --- sessions and sends
printf '{"formCode":{"systemCode":"FA_RR (1)","schemaVersion":"1-1E","value":"FA_RR"},"encryption":{"encryptedSymmetricKey":"AAAA","initializationVector":"AAAAAAAAAAAAAAAAAAAAAA=="}}' > "$T/o.json"
AUTH=$ACCESS req POST /sessions/online "$T/o.json"
is "$STATUS/$(excode)" 400/21405 "unsupported formCode: 21405"
ok "open session" ksef_open
AUTH=$ACCESS req GET /sessions/20250101-SO-0000000000-0000000000-00
is "$STATUS/$(excode)" 400/21173 "unknown session: 21173"
BAD_HASH=1 send_json "$SAMPLE" "$T/s.json"
AUTH=$ACCESS req POST "/sessions/online/$SESSION/invoices" "$T/s.json"
is "$STATUS/$(excode)" 400/21403 "wrong invoiceHash: 21403"
BAD_SIZE=1 send_json "$SAMPLE" "$T/s.json"
AUTH=$ACCESS req POST "/sessions/online/$SESSION/invoices" "$T/s.json"
is "$STATUS/$(excode)" 400/21402 "wrong invoiceSize: 21402"
sed 's/"encryptedInvoiceContent":"/&%/' "$T/s.json" > "$T/s2.json"
AUTH=$ACCESS req POST "/sessions/online/$SESSION/invoices" "$T/s2.json"
is "$STATUS/$(excode)" 400/21405 "bad Base64 content: 21405"
# A long plain string is cut out before jansson parses the rest (sim.c,
# json_load_body): errors must still be those of the whole body.
ok "the send body has a string over 1 KB" test "$(wc -c < "$T/s.json")" -gt 2000
sed 's/}$/,"encryptedInvoiceContent":"AAAA"}/' "$T/s.json" > "$T/s2.json"
AUTH=$ACCESS req POST "/sessions/online/$SESSION/invoices" "$T/s2.json"
is "$STATUS/$(excode)" 400/21405 "long content given twice: 21405"
ok "long content given twice: detail says duplicate" check_detail "duplicate"
sed 's/,"offlineMode":false}$/,"offlineMode":}/' "$T/s.json" > "$T/s2.json"
AUTH=$ACCESS req POST "/sessions/online/$SESSION/invoices" "$T/s2.json"
is "$STATUS/$(excode)" 400/21405 "malformed after the long content: 21405"
col_past() {	# the column in the detail counts the long string
	_c=$(jget "['exception']['exceptionDetailList'][0]['details'][0]" |
	    sed -n 's/.*kolumna \([0-9]*\).*/\1/p')
	[ -n "$_c" ] && [ "$_c" -ge "$(($(wc -c < "$T/s2.json") - 1))" ]
}
ok "malformed after the long content: column of the whole body" col_past
sed 's/"encryptedInvoiceContent":"/"encryptedInvoiceContent":["/; s/","offlineMode"/"],"offlineMode"/' \
	"$T/s.json" > "$T/s2.json"
AUTH=$ACCESS req POST "/sessions/online/$SESSION/invoices" "$T/s2.json"
is "$STATUS/$(excode)" 400/21405 "long content inside an array: 21405"
ok "long content inside an array: detail names the member" check_detail "encryptedInvoiceContent"

sed 's|<P_1>[^<]*</P_1>|<P_1>2025-13-45</P_1>|; s|<P_2>[^<]*</P_2>|<P_2>NEG/SCHEMA</P_2>|' "$SAMPLE" > "$T/bad.xml"
ok "send a schema-invalid invoice (202)" ksef_send "$T/bad.xml"
ok "processed" ksef_wait_invoice "$INVREF"
is "$(jget "['status']['code']" "$T/inv.json")" 430 "schema-invalid: status 430"
has_line() { jget "['status']['details'][0]" "$T/inv.json" | grep -q '^line [0-9]*: .*P_1'; }
ok "rejection details name the line and element" has_line

ok "send the sample" ksef_send "$SAMPLE"
ok "processed" ksef_wait_invoice "$INVREF"
ORIG=$(jget "['ksefNumber']" "$T/inv.json")
ok "send it again" ksef_send "$SAMPLE"
ok "processed" ksef_wait_invoice "$INVREF"
is "$(jget "['status']['code']" "$T/inv.json")" 440 "duplicate: 440"
is "$(jget "['status']['extensions']['originalKsefNumber']" "$T/inv.json")" "$ORIG" \
	"duplicate: originalKsefNumber"
is "$(jget "['status']['extensions']['originalSessionReferenceNumber']" "$T/inv.json")" \
	"$SESSION" "duplicate: originalSessionReferenceNumber"

make_invoice "REJECT/ME/1" "$T/r.xml"
faults '{"rejectPattern":"^REJECT/"}'
ok "send an invoice matching the reject pattern" ksef_send "$T/r.xml"
ok "processed" ksef_wait_invoice "$INVREF"
is "$(jget "['status']['code']" "$T/inv.json")" 450 "reject pattern: 450"
faults '{"rejectPattern":null}'

make_invoice "EARLIER/1" "$T/e.xml"
AUTH= req POST /_sim/invoices -H 'Content-Type: application/xml' --data-binary "@$T/e.xml"
is "$STATUS" 200 "POST /_sim/invoices registers an invoice"
EARLY=$(jget "['ksefNumber']")
ok "it has a KSeF number" crc8_ok "$EARLY" 32
AUTH= req POST /_sim/invoices -H 'Content-Type: application/xml' --data-binary "@$T/e.xml"
is "$STATUS/$(jget "['ksefNumber']")" "409/$EARLY" "registering it again: 409 with its number"
ok "send the earlier invoice" ksef_send "$T/e.xml"
ok "processed" ksef_wait_invoice "$INVREF"
is "$(jget "['status']['code']")/$(jget "['status']['extensions']['originalKsefNumber']")" \
	"440/$EARLY" "duplicate of a registered invoice: 440 with its number"
AUTH=$ACCESS req GET "/sessions/$SESSION/invoices/failed?pageSize=10"
is "$(jget "len(d['invoices'])")" 4 "failed list holds the 4 rejections"
AUTH=$ACCESS req GET "/sessions/$SESSION/invoices" -H "x-continuation-token: %%%"
is "$STATUS/$(excode)" 400/21418 "malformed continuation token: 21418"
AUTH=$ACCESS req GET "/sessions/$SESSION/invoices/ksef/5265877635-20250826-0100001AF629-AF/upo"
is "$STATUS/$(excode)" 400/21178 "UPO of an unknown KSeF number: 21178"

ok "login to the second context" ksef_login "$NIP2" "$TOKEN2"
AUTH=$ACCESS req GET "/sessions/$SESSION"
is "$STATUS/$(excode)" 400/21173 "another context's session: 21173"
AUTH=$ACCESS req GET "/invoices/ksef/$ORIG"
is "$STATUS/$(excode)" 400/21164 "another context's invoice: 21164"
ACCESS=$ACCESS1

# --- limits: 429 with a growing Retry-After
faults '{"limits":{"sessionMisc":{"perSecond":2,"perMinute":100,"perHour":1000}},"limitWindows":"10s,60s,60m"}'
for i in 1 2; do AUTH=$ACCESS req GET "/sessions/$SESSION"; done
is "$STATUS" 200 "within the limit"
AUTH=$ACCESS req GET "/sessions/$SESSION"
is "$STATUS" 429 "over the limit: 429"
RA1=$(hdr Retry-After)
is "$(jget "['status']['code']")" 429 "legacy 429 body"
AUTH=$ACCESS req GET "/sessions/$SESSION" -H "X-Error-Format: problem-details"
RA2=$(hdr Retry-After)
is "$(jget "['title']")/$(hdr Content-Type)" "Too Many Requests/application/problem+json" \
	"problem+json 429"
AUTH=$ACCESS req GET "/sessions/$SESSION"
RA3=$(hdr Retry-After)
ok "Retry-After grows: $RA1 < $RA2 < $RA3" test "$RA1" -ge 1 -a "$RA2" -gt "$RA1" -a "$RA3" -gt "$RA2"
AUTH=$ACCESS req GET /rate-limits
is "$(jget "['sessionMisc']['perSecond']")" 2 "GET /rate-limits shows the replaced limits"
# the hourly window, scaled to 2 s
faults '{"limits":{"invoiceStatus":{"perSecond":100,"perMinute":100,"perHour":3}},"limitWindows":"1s,1s,2s"}'
for i in 1 2 3 4; do AUTH=$ACCESS req GET "/sessions/$SESSION/invoices/$INVREF"; done
is "$STATUS/$(hdr Retry-After)" 429/2 "scaled hourly window: 4th request 429, Retry-After 2"
# a client that keeps Retry-After (no requests meanwhile) gets through again
deadline=$(( $(date +%s%N) / 1000000 + $(hdr Retry-After) * 1000 ))
past_deadline() { [ $(( $(date +%s%N) / 1000000 )) -ge "$deadline" ]; }
wait_until 10 past_deadline
AUTH=$ACCESS req GET "/sessions/$SESSION/invoices/$INVREF"
is "$STATUS" 200 "after Retry-After the window has slid: allowed again"
faults '{"limits":"off"}'
AUTH= req GET /_sim/stats
ok "stats count the 429s" test "$(jget "['responses429']")" -ge 4

# --- faults
AUTH= req GET /_sim/faults
is "$(jget "['rules']")" "[]" "no fault rules yet"
faults '{"rules":[{"group":"sessionMisc","kind":"503","count":1}]}'
AUTH=$ACCESS req GET "/sessions/$SESSION"
is "$STATUS" 503 "503 fault"
ok "503 has an HTML body" grep -q '<html>' "$T/body"
AUTH=$ACCESS req GET "/sessions/$SESSION"
is "$STATUS" 200 "count=1: only once"
faults '{"clear":true,"rules":[{"group":"sessionMisc","kind":"500","every":2,"count":2}]}'
codes=
for i in 1 2 3 4 5 6; do AUTH=$ACCESS req GET "/sessions/$SESSION"; codes="$codes$STATUS "; done
is "$codes" "200 500 200 500 200 200 " "every=2 count=2: the 2nd and 4th get 500"
faults '{"clear":true,"rules":[{"group":"sessionMisc","kind":"429","ms":3000,"count":1}]}'
AUTH=$ACCESS req GET "/sessions/$SESSION"
is "$STATUS/$(hdr Retry-After)" 429/3 "forced 429 with Retry-After 3"
faults '{"clear":true,"rules":[{"group":"sessionMisc","kind":"hang","count":1}]}'
AUTH=$ACCESS req GET "/sessions/$SESSION" --max-time 1
is "$CURL_RC/$STATUS" 28/000 "hang: the client times out"
faults '{"clear":true,"rules":[{"group":"sessionMisc","kind":"reset","count":1}]}'
AUTH=$ACCESS req GET "/sessions/$SESSION" --max-time 5
ok "reset: connection dropped without an answer (curl $CURL_RC)" test "$CURL_RC" -ne 0 -a "$STATUS" = 000
faults '{"clear":true,"rules":[{"group":"sessionMisc","kind":"slow","ms":1200,"count":1}]}'
t0=$(date +%s%N)
AUTH=$ACCESS req GET "/sessions/$SESSION"
t1=$(date +%s%N)
ok "slow: 200 after at least 1.2 s ($(( (t1 - t0) / 1000000 )) ms)" \
	test "$STATUS" = 200 -a $(( (t1 - t0) / 1000000 )) -ge 1150
AUTH= req GET /_sim/stats
RECV=$(jget "['invoices']['received']")
faults '{"clear":true,"rules":[{"group":"invoiceSend","kind":"reset-after","count":1}]}'
make_invoice "RESET/AFTER/1" "$T/ra.xml"
ksef_send "$T/ra.xml"
ok "reset-after: the client sees an error (curl $CURL_RC)" test "$CURL_RC" -ne 0 -a "$STATUS" = 000
AUTH= req GET /_sim/stats
is "$(jget "['invoices']['received']")" $((RECV + 1)) "reset-after: the invoice was stored"
is "$(jget "['faults']['reset-after']")/$(jget "['faults']['hang']")/$(jget "['faults']['503']")" \
	1/1/1 "stats count the faults"
stored() {
	AUTH=$ACCESS req GET "/sessions/$SESSION/invoices?pageSize=100"
	jget "list(i['invoiceNumber'] for i in d['invoices'] if i['status']['code'] == 200)" |
		grep -q RESET/AFTER/1
}
ok "reset-after: the invoice is in the session, accepted" wait_until 5 stored

AUTH= req GET /latarnia/status
is "$(jget "['status']")" AVAILABLE "Latarnia AVAILABLE"
faults '{"outage":"60s"}'
AUTH= req POST /auth/challenge
is "$STATUS" 503 "outage: 503"
AUTH= req GET /latarnia/status
is "$(jget "['status']")/$(jget "['messages'][0]['type']")" FAILURE/FAILURE_START \
	"outage: Latarnia FAILURE with a message"
AUTH= req GET /latarnia/messages
is "$(jget "[0]['category']")" FAILURE "Latarnia /messages"
faults '{"outage":false,"latarnia":"MAINTENANCE"}'
AUTH= req GET /latarnia/status
is "$(jget "['status']")" MAINTENANCE "Latarnia MAINTENANCE as set"
AUTH= req POST /auth/challenge
is "$STATUS" 200 "outage over"
faults '{"clear":true}'

AUTH= req GET /security/public-key-certificates
cp "$T/body" "$T/keys.json"
OLDSYM=$(jget "next(c for c in d if 'SymmetricKeyEncryption' in c['usage'])['publicKeyId']" "$T/keys.json")
faults '{"rotateKey":true}'
sed "s|\"initializationVector\"|\"publicKeyId\":\"$OLDSYM\",&|" "$T/open.json" > "$T/o2.json"
AUTH=$ACCESS req POST /sessions/online "$T/o2.json"
is "$STATUS/$(excode)" 400/21470 "rotated key: old publicKeyId gets 21470"
AUTH=$ACCESS req POST /sessions/online "$T/open.json"
is "$STATUS/$(excode)" 400/21470 "rotated key: a key wrapped with the old key gets 21470"
ok "new keys fetched" fetch_keys
ok "a session with the new key opens" ksef_open

faults '{"expireTokens":true}'
AUTH=$ACCESS req GET "/sessions/$SESSION"
is "$STATUS" 401 "expired tokens: 401"
AUTH=$REFRESH req POST /auth/token/refresh
is "$STATUS" 401 "expired refresh token: 401"
ok "a new login works" ksef_login "$NIP" "$TOKEN"
sim_stop
is "$SIM_RC" 0 "clean exit after hung, reset and delayed requests"

# --- command line and config file
printf 'fault = public:503:always:count=1\nmax-body = 64K\nsession-max-invoices = 1\nlimits = off\nprocessing-delay = 0\nauth-delay = 0\n' > "$T/sim.conf"
ok "ksef-sim starts with --config" sim_start --config "$T/sim.conf" --token "$NIP:$TOKEN"
AUTH= req POST /auth/challenge
is "$STATUS" 503 "configured fault fires"
AUTH= req POST /auth/challenge
is "$STATUS" 200 "and only once"
ok "login" ksef_login "$NIP" "$TOKEN"
head -c 70000 /dev/zero | tr '\0' a > "$T/big.json"
AUTH=$ACCESS req POST /sessions/online "$T/big.json"
is "$STATUS" 413 "body over --max-body: 413"
ok "open" ksef_open
make_invoice "MAX/1" "$T/m1.xml"
ok "first invoice" ksef_send "$T/m1.xml"
make_invoice "MAX/2" "$T/m2.xml"
ksef_send "$T/m2.xml"
is "$STATUS/$(excode)" 400/21155 "over --session-max-invoices: 21155"
sim_stop
printf 'processing-delay = 2x\n' > "$T/bad.conf"
"$SIM_BIN" --config "$T/bad.conf" 2>"$T/err" >/dev/null
is "$?" 2 "bad config: exit 2"
ok "bad config: file:line and the rule" grep -q "bad.conf:1: --processing-delay: bad duration" "$T/err"
"$SIM_BIN" --fault invoiceSend:boom:always 2>"$T/err" >/dev/null
ok "bad fault spec: named" grep -q 'unknown kind "boom"' "$T/err"
"$SIM_BIN" --token 1234567890:x 2>"$T/err" >/dev/null
ok "bad NIP in --token: named" grep -q "fails the checksum" "$T/err"
done_testing
