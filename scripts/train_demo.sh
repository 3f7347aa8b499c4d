#!/usr/bin/env bash
# Seeded, reproducible EMO demo run: synthetic data (+ the shared talking clips) → stages 0..3 → LCM distill.
# Usage: scripts/train_demo.sh [RUN_DIR] [SCALE]   SCALE multiplies every step count (default 1 = ~30 min CPU).
# Environment: MEDIA (default ../shared/media), MODEL (default tiny), THREADS (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/demo}
SCALE=${2:-1}
MEDIA=${MEDIA:-../shared/media}
MODEL=${MODEL:-tiny}
THREADS=${THREADS:-2}
PY=${PY:-.venv/bin/python}
CFG=configs/emo/train_tiny.yaml
steps() { awk -v s="$SCALE" -v n="$1" 'BEGIN { v = int(n * s); print (v < 1 ? 1 : v) }'; }
mkdir -p "$RUN"
export PYTHONHASHSEED=0
$PY -m avatar prepare-data --synthetic --portraits "$MEDIA/portraits" --speech "$MEDIA/speech" \
    --out "$RUN/data" --config "$MODEL" --clips "$(steps 24)" --max-seconds 3 --render-size 320 --seed 0 --quiet
if [ -d "$MEDIA/talking" ]; then
  $PY -m avatar prepare-data --videos "$MEDIA/talking" --out "$RUN/data" --config "$MODEL" --quiet
fi
common=(--config "$CFG" --model "$MODEL" --data "$RUN/data" --threads "$THREADS" --quiet)
$PY -m avatar train "${common[@]}" --stage 0 --out "$RUN/stage0" --steps "$(steps 600)"
$PY -m avatar train "${common[@]}" --stage 1 --out "$RUN/stage1" --init "$RUN/stage0" --steps "$(steps 500)"
$PY -m avatar train "${common[@]}" --stage 2 --out "$RUN/stage2" --init "$RUN/stage1" --steps "$(steps 150)"
$PY -m avatar train "${common[@]}" --stage 3 --out "$RUN/stage3" --init "$RUN/stage2" --steps "$(steps 50)"
$PY -m avatar distill --config "$CFG" --model "$MODEL" --data "$RUN/data" --threads "$THREADS" --quiet \
    --teacher "$RUN/stage3" --out "$RUN/distill" --steps-student 2 --steps "$(steps 50)"
echo "demo done: $RUN (loss.png and samples*.png in each stage folder)"
