#!/usr/bin/env bash
# Land the retraining of piclip_baselines_384.py once every step of its schedule has finished (status says so):
# the 384-epoch base learners and the models trained on them replace the zoo's, and every table, page and lesson
# that reads them is made again. No part of fsslib: the landing of one retraining, kept beside its carried runs.
#
#   bash papermill_runs/in_training/land_piclip_baselines_384.sh LAND   # LAND: a clone of main, made if missing
#
# Each step leaves a marker in LAND/.landing and is skipped when run again, so the script resumes after an
# interruption. What stays by hand afterwards (the script prints it): read the pages whose words depend on the
# outcome, the tests, a quiet CI run, the commit to main.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
MAIN="$(cd "$HERE/../.." && pwd)"
LAND="${1:?usage: land_piclip_baselines_384.sh LAND (a clone of main; made if missing)}"
PY="$MAIN/.venv/bin/python"
[ -d "$LAND" ] || git clone --quiet "$MAIN" "$LAND"
LAND="$(cd "$LAND" && pwd)"
cd "$LAND"
mkdir -p .landing
export PYTHONPATH="$LAND"

step() {  # step NAME COMMAND...: run once, then leave a marker
  local name="$1"; shift
  if [ -e ".landing/$name" ]; then echo "== $name: done before"; return; fi
  echo "== $name: $(date +%H:%M)"
  "$@"
  touch ".landing/$name"
}

check_finished() {  # every step of the schedule finished: the three base learners and every carried run
  local missing=0
  for fold in 1 2 3; do
    # its .json is written last: with it, the base learner has finished
    [ -f "$HERE/base_learner_384/fold$fold-e384-s0.json" ] || { echo "missing: base learner of fold $fold"; missing=1; }
  done
  for grid in piclip_baselines_toy piclip_baselines_seeds_toy piclip_hdmnet_two_way_control; do
    "$PY" - "$grid" "$HERE/$grid" <<'EOF' || missing=1
import sys
from pathlib import Path
from fsslib.launch import run_name
from fsslib.runs import expand
from fsslib.tables import load_grid
grid, carried = sys.argv[1], Path(sys.argv[2])
missing = [run_name(p) for p in expand(load_grid(f"papermill_runs/{grid}.yaml"))
           if not (carried / run_name(p) / "metrics.json").is_file()]
print(f"{grid}: {len(missing)} runs not finished" + "".join(f"\n  {name}" for name in missing))
sys.exit(1 if missing else 0)
EOF
  done
  [ "$missing" = 0 ] || { echo "The schedule has not finished: land once status says every step is."; exit 1; }
}

place_base_learners() {  # the 384-epoch base learners become the zoo's, their fold-0 doubling recorded
  cp benchmarks/results/base_learner_budget/fold0-e384-s0.pt fsslib/checkpoints/zoo/base-learner-fold0.pt
  cp benchmarks/results/base_learner_budget/fold0-e384-s0.json fsslib/checkpoints/zoo/base-learner-fold0.json
  for fold in 1 2 3; do
    cp "$HERE/base_learner_384/fold$fold-e384-s0.pt" "fsslib/checkpoints/zoo/base-learner-fold$fold.pt"
    cp "$HERE/base_learner_384/fold$fold-e384-s0.json" "fsslib/checkpoints/zoo/base-learner-fold$fold.json"
  done
  "$PY" - <<'EOF'
import json
from pathlib import Path
for path in sorted(Path("fsslib/checkpoints/zoo").glob("base-learner-fold*.json")):  # the file's name in the zoo
    record = json.loads(path.read_text())
    record["checkpoint"]["file"] = path.with_suffix(".pt").name
    path.write_text(json.dumps(record, indent=1) + "\n")
EOF
  "$PY" benchmarks/base_learner_budget.py --table-only --record-zoo
}

grid_files() {  # the grid files as they land: the doubling on the 384-epoch base learner justifies the budget
  cp "$HERE/piclip_hdmnet_two_way_control.yaml" papermill_runs/
  "$PY" - <<'EOF'
from pathlib import Path
path = Path("papermill_runs/piclip_baselines_toy.yaml")
old = "budget_control: [piclip_baselines_budget_320, piclip_baselines_budget_320_hdmnet]"
new = "budget_control: [piclip_baselines_budget_320_base_learner_384, piclip_baselines_budget_320_base_learner_384_hdmnet]"
text = path.read_text()
assert old in text, f"{path} no longer names the 24-epoch doubling grids: edit this step"
path.write_text(text.replace(old, new))
EOF
}

load_runs() {  # the carried runs into the outputs folders where --resume keeps them
  for grid in piclip_baselines_toy piclip_baselines_seeds_toy piclip_hdmnet_two_way_control; do
    mkdir -p "papermill_runs/outputs/$grid"
    "$PY" "$HERE/carry.py" load "$HERE/$grid" "papermill_runs/outputs/$grid"
  done
}

step finished check_finished
step base_learners place_base_learners
step grid_files grid_files
step runs load_runs
step trained_on "$PY" "$HERE/piclip_baselines_384.py" trained-on "$LAND"  # each CPU's epochs, from sittings.jsonl
step zoo "$PY" -m fsslib.runs papermill_runs/piclip_baselines_toy.yaml --resume      # table, zoo export, budgets
# the fill control trains its PIR-less model live (one process, about an hour): beside the steps that follow, in a
# process group of its own, which stops with this script unless the landing finishes (a rerun resumes its run)
if [ ! -e .landing/fill ]; then
  if [ -e .landing/fill.pid ] && kill -0 "$(cat .landing/fill.pid)" 2>/dev/null; then
    FILL="$(cat .landing/fill.pid)"  # still running from a start of this script that was killed
  else
    setsid bash -c '"$0" -m fsslib.runs papermill_runs/piclip_hdmnet_fill_control.yaml --jobs 1 --resume \
      > .landing/fill.log 2>&1 && touch .landing/fill' "$PY" &
    FILL=$!
    echo "$FILL" > .landing/fill.pid
  fi
  trap '[ -n "${LANDED:-}" ] || kill -- -"$FILL" 2>/dev/null || true' EXIT
fi
step seeds "$PY" -m fsslib.runs papermill_runs/piclip_baselines_seeds_toy.yaml --resume
step two_way "$PY" -m fsslib.runs papermill_runs/piclip_hdmnet_two_way_control.yaml --resume
step compare "$PY" -m fsslib.runs papermill_runs/compare_toy.yaml --jobs 1             # the zoo side by side
step two_way_errors "$PY" benchmarks/two_way_errors.py
step audit "$PY" benchmarks/zoo_first_epoch.py --cause d3329a1  # PI-CLIP(PFENet)'s record predates it
step quickstart "$PY" -m fsslib.runs papermill_runs/quickstart.yaml
if [ -n "${FILL:-}" ]; then
  while kill -0 "$FILL" 2>/dev/null; do sleep 20; done
  [ -e .landing/fill ] || { echo "the fill control failed: .landing/fill.log"; exit 1; }
fi
step docs "$PY" -m fsslib.docs
step lessons "$PY" -m fsslib.lessons
step docs_after_lessons "$PY" -m fsslib.docs
LANDED=1
git status --short | grep -v '^??' || true
cat <<'EOF'
Landed in the clone. By hand, before the commit to main:
- fsslib/docs.py: drop piclip_baselines_toy from UNRECORDED_ZOO_MACHINES (its models now record their CPU);
- remove papermill_runs/in_training/'s carried folders, this retraining's scripts and its lines in the README;
- the pages render the new state from the records (the zoo's base learners against the controls'); read what they
  now say: README's rows and limits, the PI-CLIP page and reference, the zoo card, the protocol's plateau list,
  compare_toy's and piclip_baselines_toy's answers and notes, the fill and two-way controls' pages;
- the lessons' prose is not rendered: pytest tests/test_lesson_claims.py checks each paragraph on a trained model
  against what its lesson now prints (lesson 05's section 11, lesson 08's strata and PI-CLIP takeaway); rewrite the
  paragraphs that fail with their tests, and read lesson 08's takeaway on the base learner's plateau;
- pytest tests/test_zoo.py -k repeats_its_recorded_check, python -m fsslib.docs --check, make test (quiet), commit.
EOF
