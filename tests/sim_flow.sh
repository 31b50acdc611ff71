#!/bin/sh
# sim_flow.sh: the whole KSeF 2.0 flow against ksef-sim over HTTPS, with a
# client of curl + openssl + python3 (tests/sim/client.sh), not src/ksef/:
# keys -> challenge -> token auth -> redeem -> open session -> send the official
# FA(3) sample encrypted -> 200 with a KSeF number whose CRC-8 checks -> UPO
# naming the invoice hash -> close -> session UPO; then retrieval, refresh,
# paging, and a restart that keeps the state.
. "$top_srcdir/tests/sim/client.sh"
NIP=5265877635
TOKEN="20250101-EC-0123456789-ABCDEF0123-45|nip-$NIP|flowtoken"
SAMPLE=$top_srcdir/tests/sim/data/fa3-sample.xml
UPO_XSD=$top_srcdir/schemas/upo/upo-v4-3.xsd

# The official limits, but 100 sends a second: the paging part below sends
# 12 invoices back to back, which on a fast machine takes less than a
# second and would meet the official 10 a second (a 429, not what this
# test is about).  tests/pipeline_limits.sh tests the limits.
printf '{"invoiceSend":{"perSecond":100,"perMinute":30,"perHour":180}}\n' \
	> "$T/limits.json"
ok "ksef-sim starts over TLS" sim_start --token "$NIP:$TOKEN" --processing-delay 0 \
	--auth-delay 1s --limits "$T/limits.json"
case $SIM_URL in https://127.0.0.1:*/v2) pass "prints url=https://127.0.0.1:PORT/v2";;
*) fail "prints url=https://127.0.0.1:PORT/v2 (got $SIM_URL)";; esac

ok "public keys fetched and usable as PEM" fetch_keys
# An answer comes in one TLS record, as from a real front end (sim_main.c,
# out_join_cb): openssl -msg shows each received record's inner content
# type, 17 for application data.
app_records() {
	_hp=${SIM_ORIGIN#https://}
	printf 'GET /v2/security/public-key-certificates HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$_hp" |
	    openssl s_client -connect "$_hp" -CAfile "$T/tls/ca.crt" -msg -quiet 2>/dev/null |
	    grep -A1 '^<<< .*InnerContent' | grep -c '^ *17$'
}
is "$(app_records)" 1 "an answer (head and body) comes in one TLS record"
is "$(jget '[0]["certificateId"]' | wc -c)" 45 "certificateId is a Base64 SHA-256"
is "$(openssl x509 -inform DER -in "$T/tok.der" -pubkey -noout | openssl pkey -pubin -outform DER | openssl dgst -sha256 -binary | base64 -w0)" \
	"$(jget "next(c for c in d if 'KsefTokenEncryption' in c['usage'])['publicKeyId']")" \
	"publicKeyId is SHA-256 of the SubjectPublicKeyInfo"

ok "challenge and POST /auth/ksef-token (202)" auth_start "$NIP" "$TOKEN"
AUTH=$AUTHTOK req GET "/auth/$AUTHREF"
is "$(jget "['status']['code']")" 100 "auth status is 100 while in progress"
ok "auth status reaches a final code" wait_until 10 auth_done
is "$(jget "['status']['code']")" 200 "auth status 200"
is "$(jget "['authenticationMethodInfo']['category']")" Token "authenticationMethodInfo.category"
AUTH=$AUTHTOK req POST /auth/token/redeem
is "$STATUS" 200 "redeem answers 200"
ACCESS=$(jget "['accessToken']['token']")
REFRESH=$(jget "['refreshToken']['token']")
ok "access and refresh tokens with validUntil" test -n "$(jget "['refreshToken']['validUntil']")"
AUTH=$AUTHTOK req POST /auth/token/redeem
is "$STATUS/$(jget "['exception']['exceptionDetailList'][0]['exceptionCode']")" 400/21301 \
	"second redeem: 400 / 21301"

ok "open online session (201)" ksef_open
is "$(printf %s "$SESSION" | wc -c)" 36 "session reference is 36 chars"
ok "session reference carries a correct CRC-8" crc8_ok "$SESSION" 33
ok "send the official FA(3) sample (202)" ksef_send "$SAMPLE"
ok "invoice processed" ksef_wait_invoice "$INVREF"
is "$(jget "['status']['code']" "$T/inv.json")" 200 "invoice status 200"
KSEF=$(jget "['ksefNumber']" "$T/inv.json")
case $KSEF in $NIP-????????-????????????-??) pass "KSeF number format: $KSEF";;
*) fail "KSeF number format: $KSEF";; esac
ok "KSeF number CRC-8 checks" crc8_ok "$KSEF" 32
HASH=$(sha256b64 "$SAMPLE")
is "$(jget "['invoiceHash']" "$T/inv.json")" "$HASH" "status names the invoice hash"
is "$(jget "['invoiceNumber']" "$T/inv.json")" "FA/YUCFO-4342344706/03/2026" "invoiceNumber is P_2"
ok "acquisitionDate and permanentStorageDate" \
	test -n "$(jget "['acquisitionDate']" "$T/inv.json")$(jget "['permanentStorageDate']" "$T/inv.json")"

AUTH=$ACCESS req GET "/sessions/$SESSION/invoices/$INVREF/upo"
is "$STATUS" 200 "invoice UPO by reference"
cp "$T/body" "$T/upo.xml"
ok "UPO names the invoice hash" grep -q "<SkrotDokumentu>$HASH</SkrotDokumentu>" "$T/upo.xml"
ok "UPO names the KSeF number" grep -q "<NumerKSeFDokumentu>$KSEF</NumerKSeFDokumentu>" "$T/upo.xml"
is "$(hdr x-ms-meta-hash)" "$(sha256b64 "$T/upo.xml")" "x-ms-meta-hash is the UPO's SHA-256"
xsd_valid() {
	xmllint --noout --nonet --schema "$UPO_XSD" "$1" 2>"$T/xmllint.out" ||
		{ diag "$(cat "$T/xmllint.out")"; false; }
}
ok "invoice UPO is valid against upo-v4-3.xsd" xsd_valid "$T/upo.xml"
AUTH=$ACCESS req GET "/sessions/$SESSION/invoices/ksef/$KSEF/upo"
is "$STATUS" 200 "invoice UPO by KSeF number"
URL=$(jget "['upoDownloadUrl']" "$T/inv.json")
AUTH= req GET "$URL"
is "$STATUS" 200 "upoDownloadUrl works without a token"
ok "presigned UPO is the same document" cmp -s "$T/body" "$T/upo.xml"
AUTH= req GET "$(printf %s "$URL" | sed 's/sig=/sig=f0/')"
is "$STATUS" 403 "tampered presigned URL: 403"

AUTH=$ACCESS req GET "/sessions/$SESSION"
is "$(jget "['status']['code']")" 100 "session open: 100 before close"
AUTH=$ACCESS req POST "/sessions/online/$SESSION/close"
is "$STATUS" 204 "close: 204"
sess_done() {
	AUTH=$ACCESS req GET "/sessions/$SESSION"
	[ "$(jget "['status']['code']")" = 200 ]
}
ok "session reaches 200" wait_until 10 sess_done
is "$(jget "['successfulInvoiceCount']")" 1 "successfulInvoiceCount 1"
UPOREF=$(jget "['upo']['pages'][0]['referenceNumber']")
UPOURL=$(jget "['upo']['pages'][0]['downloadUrl']")
AUTH=$ACCESS req GET "/sessions/$SESSION/upo/$UPOREF"
is "$STATUS" 200 "session UPO page"
cp "$T/body" "$T/supo.xml"
ok "session UPO names the KSeF number" grep -q "$KSEF" "$T/supo.xml"
ok "session UPO has OpisPotwierdzenia" grep -q "<CalkowitaLiczbaDokumentow>1<" "$T/supo.xml"
ok "session UPO is valid against upo-v4-3.xsd" xsd_valid "$T/supo.xml"
AUTH= req GET "$UPOURL"
is "$STATUS" 200 "session UPO downloadUrl without a token"
AUTH=$ACCESS req POST "/sessions/online/$SESSION/invoices" "$T/send.json"
is "$STATUS/$(jget "['exception']['exceptionDetailList'][0]['exceptionCode']")" 400/21180 \
	"send after close: 400 / 21180"

AUTH=$ACCESS req GET "/invoices/ksef/$KSEF"
is "$STATUS" 200 "download the invoice by KSeF number"
ok "downloaded XML is byte-identical" cmp -s "$T/body" "$SAMPLE"
is "$(hdr x-ms-meta-hash)" "$HASH" "download x-ms-meta-hash"
printf '{"subjectType":"Subject1","dateRange":{"dateType":"PermanentStorage","from":"%s"}}' \
	"$(date -u -d '-1 day' +%Y-%m-%dT%H:%M:%S.000Z)" > "$T/q.json"
AUTH=$ACCESS req POST "/invoices/query/metadata?pageSize=10" "$T/q.json"
is "$STATUS" 200 "metadata query"
is "$(jget "['invoices'][0]['ksefNumber']")" "$KSEF" "metadata finds the invoice"
is "$(jget "['hasMore']")/$(jget "['isTruncated']")" "false/false" "hasMore/isTruncated"
is "$(jget "['invoices'][0]['invoiceHash']")" "$HASH" "metadata invoiceHash"

AUTH=$REFRESH req POST /auth/token/refresh
is "$STATUS" 200 "refresh gives a new access token"
ACCESS2=$(jget "['accessToken']['token']")
AUTH=$ACCESS2 req GET /rate-limits
is "$(jget "['invoiceSend']['perHour']")" 180 "GET /rate-limits with the refreshed token"

# paging: 12 invoices in a new session, pages of 10
ok "second session" ksef_open
i=1
while [ $i -le 12 ]; do
	make_invoice "FLOW/PAGE/$i" "$T/p.xml"
	ksef_send "$T/p.xml" || break
	i=$((i + 1))
done
is "$i" 13 "12 invoices sent"
all_done() {
	AUTH=$ACCESS req GET "/sessions/$SESSION/invoices?pageSize=1000"
	[ "$(jget "sum(1 for i in d['invoices'] if i['status']['code'] == 100)")" = 0 ]
}
ok "all processed" wait_until 10 all_done
AUTH=$ACCESS req GET "/sessions/$SESSION/invoices?pageSize=10"
is "$(jget "len(d['invoices'])")" 10 "first page has 10"
CT=$(jget "['continuationToken']")
AUTH=$ACCESS req GET "/sessions/$SESSION/invoices?pageSize=10" -H "x-continuation-token: $CT"
is "$(jget "len(d['invoices'])")/$(jget "['invoices'][1]['ordinalNumber']")" 2/12 \
	"second page has the last 2"
ok "no continuationToken on the last page" sh -c "! grep -q continuationToken '$T/body'"
AUTH= req GET /_sim/invoices
is "$(jget "['count']")" 13 "/_sim/invoices lists 13 registered invoices"

# restart with the same state dir
AUTH= req GET /_sim/stats
sim_stop
is "$SIM_RC" 0 "ksef-sim exits 0 on SIGTERM"
ok "restart with the same --state" sim_start --token "$NIP:$TOKEN" --processing-delay 0
AUTH=$ACCESS2 req GET "/sessions/$SESSION/invoices/$INVREF"
is "$STATUS" 200 "access token and session survive the restart"
AUTH= req GET /_sim/invoices
is "$(jget "['count']")" 13 "registered invoices survive the restart"
AUTH=$ACCESS2 req GET "/invoices/ksef/$KSEF"
is "$STATUS" 200 "invoice download after restart"
ok "keys survive the restart" sh -c "AUTH= ; cp '$T/tokkey.pem' '$T/tokkey.old'"
fetch_keys
ok "same public key after restart" cmp -s "$T/tokkey.pem" "$T/tokkey.old"
done_testing
