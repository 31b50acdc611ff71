# lib.sh: helpers for the shell tests: TAP output, a private temp dir,
# bounded waiting, and starting/stopping a private ksefd.
#
# Use:  . "$top_srcdir/tests/lib.sh"
# make check sets top_srcdir and top_builddir; run by hand, they default to
# the source tree and the current directory.  KEEP_TMP=1 keeps the temp dir.
#
# TAP:     ok DESC CMD...  |  is GOT WANT DESC  |  like FILE ERE DESC
#          unlike FILE ERE DESC  |  pass DESC  |  fail DESC  |  diag MSG
#          skip_all REASON  |  bail MSG  |  done_testing (last line)
# Files:   t_tmpdir (sets T_TMP)  |  t_secret FILE [TEXT]
# Waiting: wait_until SECS CMD...  |  wait_log FILE ERE [SECS]
# ksefd:   ksefd_conf FILE [DB]  |  ksefd_start [ARGS]  |  ksefd_stop [SIG]
#          ksefd_alive  |  run_capped SECS CMD... (status in $?)

: "${top_srcdir:=$(cd "$(dirname "$0")/.." && pwd)}"
: "${top_builddir:=$(pwd)}"
KSEFD=${KSEFD:-$top_builddir/ksefd}
# ksefd reads the XSDs from the source tree, not from an installed copy.
KSEFD_SCHEMA_DIR=${KSEFD_SCHEMA_DIR:-$top_srcdir/schemas}
export KSEFD_SCHEMA_DIR
KSEFCTL=${KSEFCTL:-$top_builddir/ksefctl}

T_N=0
T_FAILED=0
T_TMP=
KSEFD_PID=
KSEFD_LOG=
KSEFD_STATUS=

# --- TAP -----------------------------------------------------------------

pass() {
	T_N=$((T_N + 1))
	echo "ok $T_N - $*"
}

fail() {
	T_N=$((T_N + 1))
	T_FAILED=$((T_FAILED + 1))
	echo "not ok $T_N - $*"
}

diag() {
	printf '%s\n' "$*" | sed 's/^/# /'
}

# ok DESC CMD...: passes when CMD exits 0.
ok() {
	_d=$1
	shift
	if "$@"; then pass "$_d"; else fail "$_d"; diag "command: $*"; fi
}

# is GOT WANT DESC
is() {
	if [ "$1" = "$2" ]; then
		pass "$3"
	else
		fail "$3"
		diag "got:  '$1'" "want: '$2'"
	fi
}

# like FILE ERE DESC: some line of FILE matches ERE.
like() {
	if grep -Eq -- "$2" "$1" 2>/dev/null; then
		pass "$3"
	else
		fail "$3"
		diag "no line of $1 matches: $2"
		[ -f "$1" ] && tail -n 15 "$1" | sed 's/^/# | /'
	fi
}

# unlike FILE ERE DESC: no line of FILE matches ERE.
unlike() {
	if grep -Eq -- "$2" "$1" 2>/dev/null; then
		fail "$3"
		grep -E -- "$2" "$1" | head -n 5 | sed 's/^/# | /'
	else
		pass "$3"
	fi
}

skip_all() {
	echo "1..0 # SKIP $*"
	exit 0
}

bail() {
	echo "Bail out! $*"
	exit 1
}

# Print the plan; the exit status says whether everything passed.
done_testing() {
	echo "1..$T_N"
	[ "$T_FAILED" -eq 0 ]
	exit $?
}

# --- files ---------------------------------------------------------------

# A private temp dir in T_TMP, removed at exit (after stopping ksefd).
t_tmpdir() {
	T_TMP=$(mktemp -d "${TMPDIR:-/tmp}/ksefd-test.XXXXXX") ||
	    bail "cannot create a temp dir"
	trap t_cleanup EXIT
	trap 'exit 1' INT TERM
}

t_cleanup() {
	_st=$?
	if [ -n "$KSEFD_PID" ] && kill -0 "$KSEFD_PID" 2>/dev/null; then
		kill -KILL "$KSEFD_PID" 2>/dev/null
	fi
	if [ -n "$T_TMP" ] && [ -z "${KEEP_TMP:-}" ]; then
		rm -rf "$T_TMP"
	elif [ -n "$T_TMP" ]; then
		echo "# kept $T_TMP"
	fi
	exit $_st
}

# t_secret FILE [TEXT]: a secret file of mode 0600.
t_secret() {
	(umask 077 && printf '%s\n' "${2:-test-token-$(basename "$1")}" >"$1")
}

# --- waiting -------------------------------------------------------------

# wait_until SECS CMD...: run CMD every 0.05 s until it succeeds; 1 after SECS.
wait_until() {
	_n=$(($1 * 20))
	shift
	while [ "$_n" -gt 0 ]; do
		"$@" && return 0
		sleep 0.05
		_n=$((_n - 1))
	done
	"$@"
}

# wait_log FILE ERE [SECS]: until a line of FILE matches ERE (default 10 s).
wait_log() {
	wait_until "${3:-10}" grep -Eq -- "$2" "$1"
}

# run_capped SECS CMD...: CMD that must end by itself; killed after SECS.
run_capped() {
	_s=$1
	shift
	timeout -k 2 "$_s" "$@"
}

# --- ksefd ---------------------------------------------------------------

# ksefd_conf FILE [DB]: a private config (everything under T_TMP) with one
# context whose token file is created; append more sections as needed.
ksefd_conf() {
	mkdir -p "$T_TMP/tokens"
	t_secret "$T_TMP/tokens/1234563218"
	cat >"$1" <<EOF
[daemon]
pid_file = $T_TMP/ksefd.pid
[log]
level = info
[ksef]
# a closed loopback port: tests never reach outside the machine
environment = http://127.0.0.1:9/v2
[storage]
database = ${2:-$T_TMP/db}
map_size = 16M
[api]
socket = $T_TMP/ksefd.sock
[context 1234563218]
token_file = $T_TMP/tokens/1234563218
EOF
}

# ksefd_alive: the ksefd started by ksefd_start is running.
ksefd_alive() {
	[ -n "$KSEFD_PID" ] && [ ! -s "$T_TMP/ksefd.status" ] &&
	    kill -0 "$KSEFD_PID" 2>/dev/null
}

# ksefd_start [ARGS]: ksefd -d ARGS in the background (e.g. -f CONF), its
# stderr in KSEFD_LOG; waits for its "started" line.  1 if it did not start.
ksefd_start() {
	KSEFD_LOG=$T_TMP/ksefd.log
	KSEFD_STATUS=
	rm -f "$T_TMP/ksefd.status" "$T_TMP/ksefd.run-pid"
	# The log is appended across restarts: wait for a "started" line of this run.
	_ks_from=$(($(cat "$KSEFD_LOG" 2>/dev/null | wc -l) + 1))
	(
		sh -c 'echo $$ >"$1"; shift; exec "$@"' sh \
		    "$T_TMP/ksefd.run-pid" "$KSEFD" -d "$@" 2>>"$KSEFD_LOG"
		echo $? >"$T_TMP/ksefd.status"
	) &
	wait_until 10 test -s "$T_TMP/ksefd.run-pid" || return 1
	KSEFD_PID=$(cat "$T_TMP/ksefd.run-pid")
	wait_until 10 sh -c 'tail -n "+$3" "$1" | grep -q "ksefd: ksefd .* started" ||
	    test -s "$2"' sh "$KSEFD_LOG" "$T_TMP/ksefd.status" "$_ks_from"
	ksefd_alive
}

# ksefd_stop [SIG]: send SIG (TERM) and wait up to 10 s for the exit;
# its status goes to KSEFD_STATUS.  1 if it did not exit.
ksefd_stop() {
	[ -n "$KSEFD_PID" ] || return 1
	kill -"${1:-TERM}" "$KSEFD_PID" 2>/dev/null
	if ! wait_until 10 test -s "$T_TMP/ksefd.status"; then
		KSEFD_STATUS=timeout
		return 1
	fi
	KSEFD_STATUS=$(cat "$T_TMP/ksefd.status")
	KSEFD_PID=
	return 0
}
