# client.sh: sourced by the simulator's shell tests (after tests/lib.sh for TAP
# and waiting): starting and stopping ksef-sim over TLS, and a small KSeF 2.0
# client made only of curl, openssl and python3 (for JSON) -- independent of
# src/ksef/ on purpose.
: "${top_srcdir:?top_srcdir not set}" "${top_builddir:?top_builddir not set}"
SIM_BIN=${SIM_BIN:-$top_builddir/tests/sim/ksef-sim}
. "$top_srcdir/tests/sim/mkcert.sh"

. "$top_srcdir/tests/lib.sh"

t_tmpdir
T=$T_TMP
SIM_PID=
sim_cleanup() {
	_st=$?
	sim_stop
	(exit $_st)
	t_cleanup
}
trap sim_cleanup EXIT

# sim_start ARGS...: ksef-sim over TLS with state in $T/state; sets SIM_URL, SIM_ORIGIN.
sim_start() {
	[ -f "$T/tls/ca.crt" ] || sim_mkcert "$T/tls" || return 1
	: > "$T/sim.out"
	"$SIM_BIN" --listen 127.0.0.1:0 --state "$T/state" \
		--tls-cert "$T/tls/server.crt" --tls-key "$T/tls/server.key" \
		--upo-subject "Ministerstwo Finansów" "$@" >"$T/sim.out" 2>>"$T/sim.log" &
	SIM_PID=$!
	if ! wait_until 20 grep -q '^url=' "$T/sim.out"; then
		diag "ksef-sim did not start:"
		diag "$(cat "$T/sim.log")"
		return 1
	fi
	SIM_URL=$(sed -n 's/^url=//p' "$T/sim.out")
	SIM_ORIGIN=${SIM_URL%/v2}
}

sim_alive() {
	kill -0 "$SIM_PID" 2>/dev/null
}

sim_stop() {
	[ -n "$SIM_PID" ] || return 0
	kill -TERM "$SIM_PID" 2>/dev/null
	wait_until 10 sh -c "! kill -0 $SIM_PID 2>/dev/null"
	wait "$SIM_PID" 2>/dev/null
	SIM_RC=$?
	SIM_PID=
}

# req METHOD PATH [BODYFILE] [CURL ARGS...]: PATH is under /v2 unless it is a full
# URL or starts with /_sim, /storage or /latarnia. Uses $AUTH as the bearer token
# when set. Sets STATUS; the body is in $T/body, headers in $T/hdr.
req() {
	_m=$1 _p=$2
	shift 2
	_f=
	if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then _f=$1; shift; fi
	case $_p in
	http*) _u=$_p ;;
	/_sim* | /storage* | /latarnia*) _u=$SIM_ORIGIN$_p ;;
	*) _u=$SIM_URL$_p ;;
	esac
	set -- -sS --cacert "$T/tls/ca.crt" -o "$T/body" -D "$T/hdr" -w '%{http_code}' \
		-X "$_m" "$@"
	[ -n "${AUTH:-}" ] && set -- "$@" -H "Authorization: Bearer $AUTH"
	[ -n "$_f" ] && set -- "$@" -H 'Content-Type: application/json' --data-binary "@$_f"
	STATUS=$(curl "$@" "$_u" 2>"$T/curl.err")
	CURL_RC=$?
}

# jget PYEXPR [FILE]: evaluate d<PYEXPR> (or PYEXPR when it does not start with
# [ or .) on the JSON body d; prints strings raw, everything else as JSON.
jget() {
	python3 -c '
import json, sys
try:
    d = json.load(open(sys.argv[1], encoding="utf-8"))
    e = sys.argv[2]
    v = eval("d" + e if e[:1] in "[." else e)
except Exception:
    sys.exit(1)
print(v if isinstance(v, str) else json.dumps(v))' "${2:-$T/body}" "$1"
}

hdr() {
	grep -i "^$1:" "$T/hdr" | head -n 1 | cut -d' ' -f2- | tr -d '\r'
}

sha256b64() {
	openssl dgst -sha256 -binary "$1" | base64 -w0
}

# crc8_ok NUMBER LEN: the last two hex digits are CRC-8 (poly 0x07) of the first LEN chars.
crc8_ok() {
	python3 -c '
import sys
s, n = sys.argv[1], int(sys.argv[2])
c = 0
for b in s[:n].encode():
    c ^= b
    for _ in range(8):
        c = ((c << 1) ^ 0x07) & 0xff if c & 0x80 else (c << 1) & 0xff
sys.exit(0 if s[n + 1:] == "%02X" % c and s[n] == "-" else 1)' "$1" "$2"
}

# fetch_keys: the public keys as PEM in $T/tokkey.pem and $T/symkey.pem.
fetch_keys() {
	AUTH= req GET /security/public-key-certificates
	[ "$STATUS" = 200 ] || return 1
	for _u in KsefTokenEncryption:tok SymmetricKeyEncryption:sym; do
		jget "next(c for c in d if '${_u%%:*}' in c['usage'])['certificate']" |
			base64 -d > "$T/${_u#*:}.der" &&
		openssl x509 -inform DER -in "$T/${_u#*:}.der" -pubkey -noout \
			> "$T/${_u#*:}key.pem" || return 1
	done
}

oaep() {	# oaep PEM < plain > cipher
	openssl pkeyutl -encrypt -pubin -inkey "$1" -pkeyopt rsa_padding_mode:oaep \
		-pkeyopt rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256
}

# auth_start NIP TOKEN: challenge + POST /auth/ksef-token; sets AUTHREF, AUTHTOK.
auth_start() {
	AUTH= req POST /auth/challenge
	[ "$STATUS" = 200 ] || return 1
	_chal=$(jget "['challenge']") _ts=$(jget "['timestampMs']")
	_enc=$(printf '%s|%s' "$2" "$_ts" | oaep "$T/tokkey.pem" | base64 -w0)
	printf '{"challenge":"%s","contextIdentifier":{"type":"Nip","value":"%s"},"encryptedToken":"%s"}' \
		"$_chal" "$1" "$_enc" > "$T/auth.json"
	AUTH= req POST /auth/ksef-token "$T/auth.json"
	[ "$STATUS" = 202 ] || return 1
	AUTHREF=$(jget "['referenceNumber']")
	AUTHTOK=$(jget "['authenticationToken']['token']")
}

auth_done() {
	AUTH=$AUTHTOK req GET "/auth/$AUTHREF"
	[ "$STATUS" = 200 ] && [ "$(jget "['status']['code']")" != 100 ]
}

# ksef_login NIP TOKEN: the whole token authentication; sets ACCESS, REFRESH.
ksef_login() {
	auth_start "$1" "$2" || return 1
	wait_until 10 auth_done || return 1
	[ "$(jget "['status']['code']")" = 200 ] || return 1
	AUTH=$AUTHTOK req POST /auth/token/redeem
	[ "$STATUS" = 200 ] || return 1
	ACCESS=$(jget "['accessToken']['token']")
	REFRESH=$(jget "['refreshToken']['token']")
}

# ksef_open [SYSTEMCODE]: opens an online session; sets SESSION, KEYHEX, IVHEX.
ksef_open() {
	openssl rand 32 > "$T/aes.key"
	KEYHEX=$(od -An -tx1 -v "$T/aes.key" | tr -d ' \n')
	openssl rand 16 > "$T/aes.iv"
	IVHEX=$(od -An -tx1 -v "$T/aes.iv" | tr -d ' \n')
	_ek=$(oaep "$T/symkey.pem" < "$T/aes.key" | base64 -w0)
	_iv=$(base64 -w0 "$T/aes.iv")
	printf '{"formCode":{"systemCode":"%s","schemaVersion":"1-0E","value":"FA"},"encryption":{"encryptedSymmetricKey":"%s","initializationVector":"%s"}}' \
		"${1:-FA (3)}" "$_ek" "$_iv" > "$T/open.json"
	AUTH=$ACCESS req POST /sessions/online "$T/open.json"
	[ "$STATUS" = 201 ] || return 1
	SESSION=$(jget "['referenceNumber']")
}

# send_json XMLFILE OUT: the encrypted send request (BAD_HASH=1 / BAD_SIZE=1 break it).
send_json() {
	openssl enc -aes-256-cbc -K "$KEYHEX" -iv "$IVHEX" -in "$1" -out "$T/inv.enc" || return 1
	_h=$(sha256b64 "$1") _s=$(wc -c < "$1") _eh=$(sha256b64 "$T/inv.enc")
	_es=$(wc -c < "$T/inv.enc")
	[ -n "${BAD_HASH:-}" ] && _h=$(printf x | openssl dgst -sha256 -binary | base64 -w0)
	[ -n "${BAD_SIZE:-}" ] && _s=$((_s + 1))
	printf '{"invoiceHash":"%s","invoiceSize":%d,"encryptedInvoiceHash":"%s","encryptedInvoiceSize":%d,"encryptedInvoiceContent":"%s","offlineMode":false}' \
		"$_h" "$_s" "$_eh" "$_es" "$(base64 -w0 "$T/inv.enc")" > "$2"
}

# ksef_send XMLFILE: sets INVREF on 202.
ksef_send() {
	send_json "$1" "$T/send.json" || return 1
	AUTH=$ACCESS req POST "/sessions/online/$SESSION/invoices" "$T/send.json"
	[ "$STATUS" = 202 ] || return 1
	INVREF=$(jget "['referenceNumber']")
}

inv_done() {
	AUTH=$ACCESS req GET "/sessions/$SESSION/invoices/$1"
	[ "$STATUS" = 200 ] && [ "$(jget "['status']['code']")" != 100 ] &&
		cp "$T/body" "$T/inv.json"
}

# ksef_wait_invoice INVREF: until processed; the status is in $T/inv.json.
ksef_wait_invoice() {
	wait_until 10 inv_done "$1"
}

# make_invoice NUMBER OUT [SRC]: the FA(3) sample with another invoice number (P_2).
make_invoice() {
	sed "s|<P_2>[^<]*</P_2>|<P_2>$1</P_2>|" "${3:-$top_srcdir/tests/sim/data/fa3-sample.xml}" > "$2"
}
