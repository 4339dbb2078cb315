#!/usr/bin/env bash
# The classifier and pipeline runs that benchmarks/RESULTS.md reports, in order, into one folder.
#
#   benchmarks/run_all.sh DATA_DIR [OUT_DIR]
#
# The current default's files in the repository came from OUT_DIR = benchmarks/results/epyc-vnni;
# RESULTS.md lists every result file with the command that made it.
#
# DATA_DIR holds FER2013 (test/<class>/*.jpg or fer2013.csv). Environment:
#   PYTHON       the interpreter with edgefer installed (default .venv/bin/python)
#   PEER_PYTHON  an interpreter where the fer package is installed (see benchmarks/README.md);
#                the peer runs are skipped when it is unset
#   SWEEP        thread counts of the sweep (default 1,2,3,4; a Pi 4 has four cores)
#   FRAMES       frames per pipeline run (default 300, 20 s at 15 fps)
#   NICE         niceness of every run (default 0; raise it on a shared machine)
#   FLIP         the daemon's classifier.flip_margin, to time each model as the daemon runs it
#                too (default 0.14, the daemon's default)
set -euo pipefail

data=${1:?usage: benchmarks/run_all.sh DATA_DIR [OUT_DIR]}
out=${2:-benchmarks/results}
py=${PYTHON:-.venv/bin/python}
sweep=${SWEEP:-1,2,3,4}
frames=${FRAMES:-300}
nice_level=${NICE:-0}
flip=${FLIP:-0.14}
mkdir -p "$out"

bench() {
    echo "+ edgefer-bench $*" >&2
    nice -n "$nice_level" "$py" -m edgefer.bench "$@"
}

# 1. Table 14: every shipped model, one thread, the whole four-class PublicTest split; each file
#    alone (as the paper measures) and mirrored when unsure (as the daemon runs it).
bench --dataset fer2013 --data-dir "$data" --threads 1 --flip-margin "$flip" \
    --json "$out/table14.json" --markdown "$out/table14.md"

# 2. Thread sweep of every shipped model.
bench --dataset fer2013 --data-dir "$data" --threads 1 --thread-sweep "$sweep" --no-memory-probe --flip-margin "$flip" \
    --json "$out/threads.json" --out-dir "$out/threads" --markdown "$out/threads.md"

# 3. The daemon's path with Haar: every frame at full resolution against the work-saving options.
bench --mode pipeline --source fer2013 --data-dir "$data" --frames "$frames" --detector haar --flip-margin "$flip" \
    --detect-every 1,3 --detect-scale 1,0.5 --fps 15 \
    --json "$out/pipeline-haar.json" --markdown "$out/pipeline-haar.md"

# 4. What classifier.flip_margin trades: validation accuracy against time per face.
echo "+ python -m benchmarks.margins" >&2
nice -n "$nice_level" "$py" -m benchmarks.margins --data-dir "$data" --out "$out/margins"

# 5. The fer peer, classifier and pipeline, from its own environment.
if [[ -n "${PEER_PYTHON:-}" ]]; then
    py=$PEER_PYTHON
    bench --dataset fer2013 --data-dir "$data" --threads 1 --peer fer --flip-margin "$flip" \
        --json "$out/peer-fer.json" --out-dir "$out/peer-fer" --markdown "$out/peer-fer.md"
    bench --mode pipeline --source fer2013 --data-dir "$data" --frames "$frames" --detector haar \
        --detect-every 1,3 --detect-scale 1,0.5 --fps 15 --peer fer --flip-margin "$flip" \
        --json "$out/pipeline-peer-fer.json" --markdown "$out/pipeline-peer-fer.md"
else
    echo "PEER_PYTHON unset: fer peer runs skipped" >&2
fi
