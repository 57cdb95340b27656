#!/usr/bin/env bash
# The paper's experiments at the cpu scale (issue 12), one after the other on one core: each is
# `veritrain reproduce NAME --scale cpu --out results/paper` with one torch thread (OMP_NUM_THREADS=1).
# Start two of these in parallel to use two free cores, e.g.
#   nohup scripts/reproduce_cpu.sh core1 > core1.out 2>&1 &   # table1                    (~70-75 CPU-min)
#   nohup scripts/reproduce_cpu.sh core2 > core2.out 2>&1 &   # table8 fig8 table9 table10 (~50-55 CPU-min)
# Usage: scripts/reproduce_cpu.sh NAME|core1|core2 [NAME ...]   (NAME: see `veritrain reproduce --list`)
#   OUT=DIR   folder of NAME.md/.csv/.png and training-runs/ (default results/paper)
#   LOGS=DIR  one log per experiment, NAME-cpu.log, with its wall and CPU time (default runs/reproduce-cpu)
#   DRY_RUN=1 print the runs (into the logs) instead of running them
# A killed run resumes from its last epoch when the same command is started again (finished runs and
# measurements are skipped). Exit status: the number of experiments that failed.
set -u
cd "$(dirname "$0")/.."
if [ $# -eq 0 ]; then
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    exit 2
fi
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
export VERITRAIN_DATA="${VERITRAIN_DATA:-$(cd .. && pwd)/shared/data}"
OUT="${OUT:-results/paper}"
LOGS="${LOGS:-runs/reproduce-cpu}"
mkdir -p "$LOGS"

names=()
for arg in "$@"; do
    case "$arg" in
        core1) names+=(table1) ;;
        core2) names+=(table8 fig8 table9 table10) ;;  # table9's runs are fig8's: it only writes its table
        *) names+=("$arg") ;;
    esac
done

failed=0
TIMEFORMAT='wall %0R s, CPU %0U s user + %0S s system (this process and its children)'
for name in "${names[@]}"; do
    log="$LOGS/$name-cpu.log"
    echo "$(date -u '+%F %T') UTC: $name -> $OUT (log: $log)"
    (
        echo "# $(date -u '+%F %T') UTC, $(uname -n), load average $(cut -d' ' -f1-3 /proc/loadavg)"
        echo "# veritrain reproduce $name --scale cpu --out $OUT --device cpu --no-progress ${DRY_RUN:+--dry-run}"
        time python -m veritrain reproduce "$name" --scale cpu --out "$OUT" --device cpu --no-progress \
            ${DRY_RUN:+--dry-run}
        rc=$?
        echo "# exit $rc at $(date -u '+%F %T') UTC"
        exit $rc
    ) > "$log" 2>&1
    rc=$?
    tail -n 2 "$log"
    if [ $rc -ne 0 ]; then
        echo "$name failed (exit $rc): see $log"
        failed=$((failed + 1))
    fi
done
exit $failed
