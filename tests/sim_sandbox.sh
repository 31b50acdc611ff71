#!/bin/sh
# sim_sandbox.sh: scripts/sandbox start/stop: certificates, ksef-sim over TLS
# and ksefd with a generated config, the printed assignments, both answering,
# a second start refused, and stop leaving DIR for inspection.
. "$top_srcdir/tests/lib.sh"
t_tmpdir
SB=$T_TMP/sb
KSEFD_BUILD=$top_builddir
export KSEFD_BUILD
SIM_ARGS="--processing-delay 0 --auth-delay 0"
export SIM_ARGS
sandbox() { sh "$top_srcdir/scripts/sandbox" "$@"; }
stop_at_exit() { _st=$?; sandbox stop "$SB" >/dev/null 2>&1; (exit $_st); t_cleanup; }
trap stop_at_exit EXIT

ok "sandbox start" sh -c 'sh "$1/scripts/sandbox" start "$2" >"$3" 2>"$4"' sh \
	"$top_srcdir" "$SB" "$T_TMP/env.out" "$T_TMP/start.err"
[ -s "$T_TMP/start.err" ] && diag "$(cat "$T_TMP/start.err")"
for v in KSEF_SIM_URL KSEF_CA KSEF_NIP KSEF_TOKEN_FILE KSEFD_CONF KSEFD_SOCKET KSEFD_SPOOL KSEFD_LOG; do
	like "$T_TMP/env.out" "^$v='.+'\$" "prints $v"
done
. "$T_TMP/env.out"
is "$KSEF_NIP" 5265877635 "context NIP of the official FA(3) sample"
is "$(stat -c %a "$KSEF_TOKEN_FILE")" 600 "token file has mode 0600"
ok "the simulator answers over TLS with the test CA" \
	curl -sf --cacert "$KSEF_CA" -o "$T_TMP/keys.json" "$KSEF_SIM_URL/security/public-key-certificates"
ok "ksefd answers on its socket" \
	curl -sf --unix-socket "$KSEFD_SOCKET" -o /dev/null http://localhost/healthz
like "$KSEFD_CONF" "^environment = $KSEF_SIM_URL\$" "ksefd.conf points at the simulator"
like "$KSEFD_CONF" "^token_file = $KSEF_TOKEN_FILE\$" "ksefd.conf names the token file"
like "$KSEFD_LOG" "ksefd: ksefd .* started" "ksefd started (its log)"
ok "ksefd -n accepts the generated config" sh -c 'KSEFD_SCHEMA_DIR="$1/schemas" "$2/ksefd" -n -f "$3" >/dev/null' \
	sh "$top_srcdir" "$top_builddir" "$KSEFD_CONF"
# the simulator accepts the generated token: a whole login with curl + openssl
TOKEN=$(cat "$KSEF_TOKEN_FILE")
python3 -c 'import json,sys,base64; open(sys.argv[2],"wb").write(base64.b64decode(next(c for c in json.load(open(sys.argv[1])) if "KsefTokenEncryption" in c["usage"])["certificate"]))' \
	"$T_TMP/keys.json" "$T_TMP/tok.der"
openssl x509 -inform DER -in "$T_TMP/tok.der" -pubkey -noout > "$T_TMP/tok.pem"
curl -sf --cacert "$KSEF_CA" -X POST -o "$T_TMP/chal.json" "$KSEF_SIM_URL/auth/challenge"
CH=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["challenge"], d["timestampMs"])' "$T_TMP/chal.json")
ENC=$(printf '%s|%s' "$TOKEN" "${CH#* }" | openssl pkeyutl -encrypt -pubin -inkey "$T_TMP/tok.pem" \
	-pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256 | base64 -w0)
printf '{"challenge":"%s","contextIdentifier":{"type":"Nip","value":"%s"},"encryptedToken":"%s"}' \
	"${CH%% *}" "$KSEF_NIP" "$ENC" > "$T_TMP/auth.json"
curl -sf --cacert "$KSEF_CA" -H 'Content-Type: application/json' --data-binary "@$T_TMP/auth.json" \
	-o "$T_TMP/init.json" "$KSEF_SIM_URL/auth/ksef-token"
REF=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["referenceNumber"], d["authenticationToken"]["token"])' "$T_TMP/init.json")
auth_ok() {
	curl -sf --cacert "$KSEF_CA" -H "Authorization: Bearer ${REF#* }" -o "$T_TMP/st.json" \
		"$KSEF_SIM_URL/auth/${REF%% *}" &&
	grep -q '"code":200' "$T_TMP/st.json"
}
ok "the generated token authenticates at the simulator" wait_until 10 auth_ok

ok "a second start is refused" sh -c '! sh "$1/scripts/sandbox" start "$2" >/dev/null 2>"$3"' sh \
	"$top_srcdir" "$SB" "$T_TMP/again.err"
like "$T_TMP/again.err" "already runs" "and says why"
SIMPID=$(cat "$SB/sim.pid")
KPID=$(cat "$SB/ksefd.pid.run")
ok "sandbox stop" sandbox stop "$SB"
ok "the simulator stopped" sh -c "! kill -0 $SIMPID 2>/dev/null"
ok "ksefd stopped" sh -c "! kill -0 $KPID 2>/dev/null"
ok "DIR is kept" test -f "$SB/ksefd.log" -a -f "$SB/sim.log" -a -d "$SB/db"
done_testing
