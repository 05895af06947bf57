#!/usr/bin/env bash
# The reliability suite (#15), as anyone can rerun it:
#
#   scripts/chaos.sh                 short pass (what CI runs inside scripts/test.sh)
#   scripts/chaos.sh --long          long pass: 10 iterations per chaos test and 36 kills,
#                                    each fuzz target for FUZZ_SECONDS (default 300), and the
#                                    figures into RELIABILITY.md
#   scripts/chaos.sh --seed N        replay: the same seed draws the same faults
#   scripts/chaos.sh --iterations N  iterations per chaos test
#
# Starts the test servers when they are not running (scripts/services.sh), runs the chaos
# tests (tests/chaos) one at a time, and prints every figure; --long also runs the hostile
# input tests and the fuzzers, and rewrites the "Last long run" section of RELIABILITY.md.
set -euo pipefail
cd "$(dirname "$0")/.."

seed=""
iterations=""
long=0
while [ $# -gt 0 ]; do
    case "$1" in
        --long) long=1 ;;
        --seed) seed="$2"; shift ;;
        --iterations) iterations="$2"; shift ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "chaos.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
[ -n "$seed" ] || seed=$(( (RANDOM << 15 | RANDOM) % 1000000000 + 1 ))
if [ -z "$iterations" ]; then
    if [ "$long" = 1 ]; then iterations=10; else iterations=3; fi
fi
# At least 30 kills must land in the long pass; a few runs end before their moment.
[ "$long" = 1 ] && export LOMOB_CHAOS_ITERATIONS_KILL="${LOMOB_CHAOS_ITERATIONS_KILL:-36}"

if [ -z "${LOMOB_TEST_MOTO_ENDPOINT:-}" ]; then
    scripts/services.sh start
    trap 'scripts/services.sh stop' EXIT
    # shellcheck disable=SC1091
    source .test-services/env
fi
command -v faketime >/dev/null 2>&1 || {
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq faketime >/dev/null 2>&1 || echo "chaos.sh: faketime not installed: the clock test will fail" >&2
}
export LOMOB_REQUIRE_SERVICES=1 LOMOB_CHAOS_SEED="$seed" LOMOB_CHAOS_ITERATIONS="$iterations"
report=$(mktemp)
export LOMOB_CHAOS_REPORT="$report"
echo "chaos.sh: seed $seed, $iterations iteration(s) per test (replay: scripts/chaos.sh --seed $seed --iterations $iterations)"
started=$(date +%s)
log=$(mktemp)
status=0
cargo test -q --test chaos -- --test-threads=1 --nocapture >"$log" 2>&1 || status=$?
grep -E "^chaos [a-z]+:|^chaos: the failed|test result|panicked|FAILED" "$log" || true
[ "$status" = 0 ] || tail -60 "$log"
elapsed=$(( $(date +%s) - started ))
python3 - "$report" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
for r in rows:
    print(f"chaos.sh: {r['test']}: {r['iterations']} iterations, {sum(r['faults'].values())} faults, "
          f"{r['files_checked']} files checked, {r['files_lost']} lost, {r['open_uploads']} uploads left open")
EOF
if [ "$status" != 0 ]; then
    echo "chaos.sh: FAILED (seed $seed): replay with scripts/chaos.sh --seed $seed --iterations $iterations" >&2
    exit "$status"
fi
[ "$long" = 1 ] || exit 0

# The long pass: hostile inputs and fuzzing, then the figures into RELIABILITY.md.
hostile_log=$(mktemp)
cargo test -q --test e2e -- messages hostile iso_cli restore::a_hostile recover 2>&1 | tee "$hostile_log" | grep -E "test result" || true
profiles=$(ls tests/e2e/snapshots/e2e__messages__profile_*.snap | wc -l)
fuzz_log=$(mktemp)
fuzz_script=scripts/fuzz.sh
[ -x "$fuzz_script" ] || fuzz_script=scripts/fuzz-iso.sh
"$fuzz_script" "${FUZZ_SECONDS:-300}" 2>&1 | tee "$fuzz_log" | grep -E "^fuzz" || true
commit=$(git rev-parse --short HEAD)
python3 - "$report" "$fuzz_log" "$profiles" "$seed" "$iterations" "$elapsed" "$commit" <<'EOF'
import json, re, sys, datetime
report, fuzz_log, profiles, seed, iterations, elapsed, commit = sys.argv[1:]
rows = [json.loads(l) for l in open(report) if l.strip()]
faults = {}
for r in rows:
    for k, v in r["faults"].items():
        faults[k] = faults.get(k, 0) + v
tot = lambda k: sum(r[k] for r in rows)
restores = tot("restores")
fuzz = [l.strip() for l in open(fuzz_log) if l.startswith("fuzz")]
out = []
out.append("<!-- chaos:begin (written by scripts/chaos.sh --long; edit above or below) -->")
out.append(f"## Last long run\n")
out.append(f"`scripts/chaos.sh --long --seed {seed} --iterations {iterations}` on {datetime.date.today()}, "
           f"commit {commit}, {int(elapsed)//60} min for the chaos tests.\n")
out.append("| figure | value |\n| --- | --- |")
out.append(f"| iterations (all chaos tests) | {tot('iterations')} |")
out.append(f"| faults injected | {sum(faults.values())} |")
out.append(f"| files checked byte for byte after a restore | {tot('files_checked')} |")
out.append(f"| **files lost** | **{tot('files_lost')}** |")
out.append(f"| **uploads left open** | **{tot('open_uploads')}** |")
out.append(f"| restore runs | {restores} |")
if restores:
    out.append(f"| requests per restore run | {tot('restore_requests')/restores:.1f} |")
    out.append(f"| request dollars per restore run (Deep Archive list prices) | ${tot('restore_usd')/restores:.6f} |")
out.append(f"| malformed profiles, each message snapshot-tested | {profiles} |")
out.append("")
out.append("Faults by kind:\n")
out.append("| fault | times |\n| --- | --- |")
for k in sorted(faults):
    out.append(f"| {k} | {faults[k]} |")
outcomes = {}
for r in rows:
    for k, v in r.get("outcomes", {}).items():
        outcomes[k] = outcomes.get(k, 0) + v
out.append("")
out.append("How runs under faults ended (exit codes: 0 done, 1 failure, 3 partial, 5 a server kept failing, 6 integrity, 7 waiting for a thaw):\n")
out.append("| run | times |\n| --- | --- |")
for k in sorted(outcomes):
    out.append(f"| {k} | {outcomes[k]} |")
out.append("")
out.append("Per test:\n")
out.append("| test | seed | iterations | faults | files checked | lost | open uploads |\n| --- | --- | --- | --- | --- | --- | --- |")
for r in rows:
    out.append(f"| {r['test']} | {r['seed']} | {r['iterations']} | {sum(r['faults'].values())} | {r['files_checked']} | {r['files_lost']} | {r['open_uploads']} |")
out.append("")
out.append("Fuzzing:\n")
out.append("```")
out.extend(fuzz or ["(no fuzz summary line: see the script's output)"])
out.append("```")
out.append("<!-- chaos:end -->")
section = "\n".join(out)
try:
    text = open("RELIABILITY.md").read()
except FileNotFoundError:
    text = "# Reliability\n\n<!-- chaos:begin --><!-- chaos:end -->\n"
text = re.sub(r"<!-- chaos:begin.*?<!-- chaos:end -->", lambda _: section, text, flags=re.S)
open("RELIABILITY.md", "w").write(text)
print("chaos.sh: RELIABILITY.md updated")
EOF
