#!/usr/bin/env bash
# The paper's experiments at the cpu scale (issue 12), one after the other on one core: each is
# `veritrain reproduce NAME --scale cpu --out results/paper` with one torch thread (OMP_NUM_THREADS=1).
# Start the two halves in parallel to use two free cores (about an hour each):
#   nohup scripts/reproduce_cpu.sh core1 > core1.out 2>&1 &   # Table I's FC1 (~58 CPU-min)
#   nohup scripts/reproduce_cpu.sh core2 > core2.out 2>&1 &   # Table I's FC2, Tables VIII, IX, X, Fig. 8 (~58)
# core2 trains and measures Table I's FC2 first (~13 CPU-min), so that core1, which ends by writing
# table1.md from the finished runs (`table1:no-train`), finds it done. `scripts/reproduce_cpu.sh table1`
# alone runs all of Table I (~70 CPU-min).
# Usage: scripts/reproduce_cpu.sh ITEM [ITEM ...], an ITEM being
#   NAME          veritrain reproduce NAME --scale cpu (NAME: see `veritrain reproduce --list`)
#   NAME:TEXT     only its runs whose key contains TEXT (--only TEXT)
#   NAME:no-train write NAME's table from the finished runs, training nothing (--no-train)
#   core1, core2  the two halves above
# Environment: OUT=DIR (default results/paper), LOGS=DIR (one log per item with its wall and CPU time,
# default runs/reproduce-cpu), DRY_RUN=1 (print the runs into the logs instead of running them).
# A killed item resumes from its last epoch when started again (finished runs and measurements are
# skipped). Exit status: the number of items that failed.
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

items=()
for arg in "$@"; do
    case "$arg" in
        core1) items+=(table1:mnist-fc1 table1:no-train) ;;
        # table9's runs are fig8's: it only writes its table
        core2) items+=(table1:mnist-fc2 table8 fig8 table9 table10) ;;
        *) items+=("$arg") ;;
    esac
done

failed=0
TIMEFORMAT='wall %0R s, CPU %0U s user + %0S s system (this process and its children)'
for item in "${items[@]}"; do
    name="${item%%:*}"
    extra=()
    if [ "$item" != "$name" ]; then
        part="${item#*:}"
        if [ "$part" = no-train ]; then extra=(--no-train); else extra=(--only "$part"); fi
    fi
    if [ -n "${DRY_RUN:-}" ]; then extra+=(--dry-run); fi
    log="$LOGS/$(echo "$item" | tr ':,/' '---')-cpu.log"
    cmd=(python -m veritrain reproduce "$name" --scale cpu --out "$OUT" --device cpu --no-progress "${extra[@]}")
    echo "$(date -u '+%F %T') UTC: ${cmd[*]} (log: $log)"
    (
        echo "# $(date -u '+%F %T') UTC, $(uname -n), load average $(cut -d' ' -f1-3 /proc/loadavg)"
        echo "# ${cmd[*]}"
        time "${cmd[@]}"
        rc=$?
        echo "# exit $rc at $(date -u '+%F %T') UTC"
        exit $rc
    ) > "$log" 2>&1
    rc=$?
    tail -n 2 "$log"
    if [ $rc -ne 0 ]; then
        echo "$item failed (exit $rc): see $log"
        failed=$((failed + 1))
    fi
done
exit $failed
