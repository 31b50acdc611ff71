#!/bin/sh
# fuzz.sh: build tests/sim/fuzz_sim.c as a libFuzzer target with clang and run
# it on a copy of tests/sim/corpus (the committed corpus stays small).
#   tests/sim/fuzz.sh [SECONDS] [BUILD]   BUILD: a configured build dir (config.h)
# New inputs land in $WORK/corpus; crashes in $WORK (default /tmp/ksef-sim-fuzz).
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
secs=${1:-60}
build=${2:-${KSEFD_BUILD:-$top/build/plain}}
work=${WORK:-/tmp/ksef-sim-fuzz}
command -v clang >/dev/null || { echo "fuzz.sh: clang is needed (apt-get install clang)" >&2; exit 1; }
[ -f "$build/config.h" ] || { echo "fuzz.sh: $build/config.h missing: configure a build dir" >&2; exit 1; }
mkdir -p "$work/corpus"
cp "$top"/tests/sim/corpus/* "$work/corpus/"
s=$top/tests/sim
# shellcheck disable=SC2046
clang -g -O1 -fsanitize=fuzzer,address,undefined -I"$build" -iquote "$top/src" \
	-DSIM_SCHEMA_DIR="\"$top/schemas\"" \
	"$s/fuzz_sim.c" "$s/sim.c" "$s/sim_map.c" "$s/sim_crypto.c" "$s/sim_time.c" \
	"$s/sim_limit.c" "$s/sim_fault.c" "$s/sim_proc.c" "$s/sim_conf.c" \
	"$top/src/log.c" "$top/src/util.c" \
	$(pkg-config --cflags --libs jansson libxml-2.0 libcrypto) -lm -o "$work/fuzz_sim"
cd "$work"
FUZZ_SIM_ABORT=1 ./fuzz_sim -max_total_time="$secs" -max_len=65536 -timeout=10 \
	-rss_limit_mb=4096 corpus
