# mkcert.sh: sourced; sim_mkcert DIR creates a throwaway test CA and a server
# certificate for 127.0.0.1/localhost with the openssl command:
#   DIR/ca.crt, DIR/ca.key, DIR/server.crt, DIR/server.key (keys mode 0600).
# Nothing here is committed: every test run makes its own.
sim_mkcert() {
	_mk_dir=$1
	mkdir -p "$_mk_dir" || return 1
	( umask 077
	openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 2 \
		-subj "/CN=ksef-sim test CA" -keyout "$_mk_dir/ca.key" -out "$_mk_dir/ca.crt" \
		-addext "basicConstraints=critical,CA:TRUE" \
		-addext "keyUsage=critical,keyCertSign,cRLSign" &&
	openssl req -newkey rsa:2048 -nodes -sha256 -subj "/CN=127.0.0.1" \
		-keyout "$_mk_dir/server.key" -out "$_mk_dir/server.csr" &&
	printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" \
		"basicConstraints=CA:FALSE" "keyUsage=digitalSignature,keyEncipherment" \
		"extendedKeyUsage=serverAuth" > "$_mk_dir/server.ext" &&
	openssl x509 -req -in "$_mk_dir/server.csr" -CA "$_mk_dir/ca.crt" -CAkey "$_mk_dir/ca.key" \
		-CAcreateserial -days 2 -sha256 -extfile "$_mk_dir/server.ext" -out "$_mk_dir/server.crt"
	) >/dev/null 2>&1 || { echo "mkcert: openssl failed in $_mk_dir" >&2; return 1; }
	chmod 644 "$_mk_dir/ca.crt" "$_mk_dir/server.crt"
	rm -f "$_mk_dir/server.csr" "$_mk_dir/server.ext" "$_mk_dir/ca.srl"
}
