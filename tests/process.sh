#!/bin/sh
# process.sh: the ksefd process from outside: options, the example config,
# `-n`, start in a private dir, SIGHUP reloads (good, broken, needs-restart),
# SIGTERM, refused secrets, the pid file of a background ksefd.
. "$top_srcdir/tests/lib.sh"

[ -x "$KSEFD" ] || bail "no ksefd at $KSEFD"
t_tmpdir
cd "$T_TMP" || bail "cd $T_TMP"

# --- command line ---------------------------------------------------------
"$KSEFD" -V >version.out 2>&1
is "$?" 0 "-V exits 0"
like version.out '^ksefd [0-9]+\.[0-9]+\.[0-9]+$' "-V prints the version"
# Which malloc configure chose, and that malloc really resolves to it.
case ${KSEFD_MALLOC:-} in
tcmalloc) like version.out '^malloc: tcmalloc [0-9]+\.[0-9]+$' "-V: malloc is tcmalloc's, as configured" ;;
*) like version.out '^malloc: glibc$' "-V: malloc is glibc's, as configured" ;;
esac
"$KSEFD" -h >help.out 2>&1
is "$?" 0 "-h exits 0"
for word in ' -d ' ' -f file ' ' -n ' ' -v ' ' -V ' SIGHUP SIGTERM \
    'Exit status' 'needs restart' 'not reloading' 'ksefd.conf'; do
	like help.out "$word" "--help documents '$word'"
done
"$KSEFD" --help >help2.out 2>&1
ok "--help is -h" cmp -s help.out help2.out
"$KSEFD" -x >bad.out 2>&1
is "$?" 2 "unknown option exits 2"
like bad.out '^usage: ksefd' "unknown option prints usage"

# --- the shipped example --------------------------------------------------
example=$top_srcdir/conf/ksefd.conf
mkdir -p etc/tokens
t_secret etc/tokens/1234563218
sed "s|/etc/ksefd/|$T_TMP/etc/|g" "$example" >example.conf
"$KSEFD" -n -f example.conf >example.out 2>&1
is "$?" 0 "the example config passes ksefd -n"
like example.out '^configuration OK$' "ksefd -n prints configuration OK"

# Every optional `#key = value` line of the example must be valid too.
t_secret etc/api.token
sed -e 's/^#\([a-z_0-9]* = \)/\1/' -e "s|/etc/ksefd/|$T_TMP/etc/|g" \
    -e 's|^ca_file = .*|ca_file = /nonexistent-is-fine/ca.pem|' \
    "$example" >example-all.conf
"$KSEFD" -n -f example-all.conf >example-all.out 2>&1
is "$?" 0 "the example with every optional key uncommented passes -n"
[ "$?" -eq 0 ] || sed 's/^/# | /' example-all.out

# The example documents every key of doc/config-keys.md.
awk -F'|' '/^\| [a-z]/ { gsub(/ /, "", $2); gsub(/ /, "", $3);
	if ($2 == "section") next;
	if ($2 == "contextNIP") $2 = "context";
	if ($3 == "GROUP") next;
	print $2 "." $3 }' "$top_srcdir/doc/config-keys.md" | sort >keys.doc
awk '/^\[/ { s = $1; sub(/^\[/, "", s); sub(/\]$/, "", s); next }
	/^#?[a-z_0-9]+ = / { k = $1; sub(/^#/, "", k); print s "." k }' \
    "$example" | sort -u >keys.example
missing=$(comm -23 keys.doc keys.example | tr '\n' ' ')
is "$missing" "" "the example shows every key of doc/config-keys.md"
ok "doc/config-keys.md lists keys" test "$(wc -l <keys.doc)" -ge 40

# --- ksefd -n on a broken file ----------------------------------------------
cp "$top_srcdir/tests/data/conf/many.conf" many.conf
t_secret tok
"$KSEFD" -n -f many.conf >many.out 2>&1
is "$?" 1 "ksefd -n on a broken config exits 1"
like many.out '^many\.conf:7: log\.level: chatty' "first error with file:line"
like many.out '^many\.conf:13: \[context 1111111112\]: NIP has a wrong check digit' \
    "last error with file:line"
is "$(grep -c '^many\.conf:' many.out)" 4 "every error, once"
unlike many.out 'configuration OK' "no OK on errors"

# --- refused secret at start ------------------------------------------------
ksefd_conf group.conf
chmod 640 "$T_TMP/tokens/1234563218"
run_capped 10 "$KSEFD" -d -f group.conf >group.out 2>&1
is "$?" 1 "a group-readable token file: ksefd exits 1"
like group.out 'group\.conf:[0-9]+: context 1234563218: token_file: secret file .* is accessible by group or others \(mode 0640\)' \
    "with a clear message and file:line"
unlike group.out 'test-token' "the token is not printed"
chmod 600 "$T_TMP/tokens/1234563218"

# --- a database that cannot be opened --------------------------------------
: >not-a-dir
ksefd_conf nodb.conf "$T_TMP/not-a-dir/db"
run_capped 10 "$KSEFD" -d -f nodb.conf >nodb.out 2>&1
is "$?" 1 "a database that cannot be opened: ksefd exits 1"
like nodb.out "$T_TMP/not-a-dir/db" "and names it"

# --- a running ksefd: reloads and SIGTERM -----------------------------------
ksefd_conf run.conf
cp run.conf run-orig.conf
if ksefd_start -f run.conf; then pass "ksefd -d starts"; else
	fail "ksefd -d starts"; sed 's/^/# | /' "$KSEFD_LOG"; done_testing; fi
like "$KSEFD_LOG" 'ksefd: ksefd [0-9.]+ started: KSeF ' "started line"
ok "the store is opened at start (storage.database)" test -f "$T_TMP/db/data.mdb"

sed 's/^level = info$/level = debug/' run-orig.conf >run.conf
kill -HUP "$KSEFD_PID"
ok "SIGHUP with a changed log level: reloaded" \
    wait_log "$KSEFD_LOG" 'reloaded configuration: log\.level info -> debug$'

cp run.conf run-debug.conf
n=$(wc -l <run.conf)
printf '[retry]\nbackoff_min = -5s\n[bogus]\n' >>run.conf
kill -HUP "$KSEFD_PID"
ok "SIGHUP with a broken file: not reloading" \
    wait_log "$KSEFD_LOG" "config file $T_TMP/run.conf has errors, not reloading"
like "$KSEFD_LOG" "$T_TMP/run\\.conf:$((n + 2)): retry\\.backoff_min: -5s is negative" \
    "the error with file:line"
like "$KSEFD_LOG" "$T_TMP/run\\.conf:$((n + 3)): unknown section \\[bogus\\]" \
    "every error"
ok "still running after a broken reload" ksefd_alive

# Proof that the old (debug) config stayed: the next diff starts from debug.
sed 's/^level = debug$/level = warn/' run-debug.conf >run.conf
kill -HUP "$KSEFD_PID"
ok "a later valid reload works, from the config before the broken one" \
    wait_log "$KSEFD_LOG" 'reloaded configuration: log\.level debug -> warn$'

sed -e "s|^database = .*|database = $T_TMP/db2|" -e 's/^level = .*/level = info/' \
    run-orig.conf >run.conf
kill -HUP "$KSEFD_PID"
ok "storage.database change: needs restart" \
    wait_log "$KSEFD_LOG" "storage\\.database $T_TMP/db -> $T_TMP/db2 needs restart, keeping the old value"
ok "and the rest is applied" \
    wait_log "$KSEFD_LOG" 'reloaded configuration: log\.level warn -> info$'
ok "still running" ksefd_alive

if ksefd_stop TERM; then pass "SIGTERM: exits promptly"; else
	fail "SIGTERM: exits promptly"; fi
is "$KSEFD_STATUS" 0 "SIGTERM: exit status 0"
like "$KSEFD_LOG" 'SIGTERM received, shutting down' "SIGTERM logged"
like "$KSEFD_LOG" 'ksefd: exiting$' "exit logged"

cp run-orig.conf run.conf
ksefd_start -f run.conf
ok "SIGINT: exits" ksefd_stop INT
is "$KSEFD_STATUS" 0 "SIGINT: exit status 0"

# --- in the background: pid file ---------------------------------------------
ksefd_conf bg.conf
run_capped 10 "$KSEFD" -f bg.conf >bg.out 2>&1
is "$?" 0 "ksefd without -d detaches and exits 0 once started"
ok "pid file written" wait_until 10 test -s ksefd.pid
bgpid=$(cat ksefd.pid 2>/dev/null)
ok "pid file holds a live process" kill -0 "${bgpid:-0}"
run_capped 10 "$KSEFD" -f bg.conf >bg2.out 2>&1
is "$?" 1 "a second ksefd refuses to start"
like bg2.out "another ksefd \\(pid $bgpid\\) is running: it holds the pid file $T_TMP/ksefd\\.pid" \
    "and says which one"
kill -TERM "$bgpid" 2>/dev/null
ok "background ksefd exits on SIGTERM" \
    wait_until 10 sh -c '! kill -0 "$1" 2>/dev/null' sh "$bgpid"
ok "pid file removed at exit" test ! -e ksefd.pid

done_testing
