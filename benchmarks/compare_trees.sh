#!/usr/bin/env bash
# The screening, store and dashboard benchmarks of two checkouts, alternating, in one session:
# what a refactor must leave within noise.  Each tree runs its own benchmarks/ scripts on its
# own package; the logs go to OUT.
#   git worktree add /tmp/before REV
#   bash benchmarks/compare_trees.sh /tmp/before "$PWD" /tmp/bench
set -u
if [ $# -ne 3 ]; then echo "usage: bash benchmarks/compare_trees.sh BEFORE AFTER OUT" >&2; exit 2; fi
python=${PYTHON:-$(dirname "$0")/../.venv/bin/python}
python=$(realpath "$python")
declare -A tree=([before]=$(realpath "$1") [after]=$(realpath "$2"))
out=$(realpath -m "$3") && mkdir -p "$out"
run() {  # run NAME TREE ARGS...: one benchmark in one tree, its log in OUT
  local log=$out/$1.log tree=$2; shift 2
  (cd "$tree" && PYTHONPATH=$tree /usr/bin/time -f "wall %e s" "$python" "$@") >"$log" 2>&1
  echo "$(tail -1 "$log")  $log"
}
for rep in 1 2; do
  for who in before after; do
    run "screening-$who-$rep" "${tree[$who]}" benchmarks/screening.py \
      --candidates 2000 --graphs 20000 --rewrites 2000
    run "store-$who-$rep" "${tree[$who]}" benchmarks/store.py --sizes 10000
  done
done
for who in before after; do
  run "dashboard-$who" "${tree[$who]}" benchmarks/dashboard.py --rebuild --repeat 5 \
    --db "sqlite:///$out/dashboard-$who.db"
done
