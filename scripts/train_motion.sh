#!/usr/bin/env bash
# Seeded, reproducible training of the shipped motion sampler (avatar/assets/motion):
# prepare-motion over the real talking clips (train and val splits only; eval-only clips never) →
# train-motion (v-prediction teachers of the mouth and head parts, audio dropout) →
# distill-motion (the head part: a 2-step consistency student; the mouth part keeps the teacher's weights) →
# the student's model folder copied to avatar/assets/motion (its README.md, the model card, is kept).
# Usage: scripts/train_motion.sh [RUN_DIR]
# Environment: DATA (default ../shared/data/talking), TEACHER_STEPS (5000), STUDENT_STEPS (250),
# PY (.venv/bin/python). One thread per process (2 cores). About 17 minutes on one core with the
# face-mesh captures cached (5 more without).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/motion}
DATA=${DATA:-../shared/data/talking}
TEACHER_STEPS=${TEACHER_STEPS:-5000}
STUDENT_STEPS=${STUDENT_STEPS:-250}
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=1 PYTHONHASHSEED=0
"$PY" -m avatar prepare-motion --videos "$DATA" --out "$RUN" --split train,val
"$PY" -m avatar train-motion --data "$RUN" --out "$RUN/teacher" --steps "$TEACHER_STEPS" --seed 0 \
  --set eval_every=1000
"$PY" -m avatar distill-motion --data "$RUN" --teacher "$RUN/teacher" --out "$RUN/student" \
  --steps "$STUDENT_STEPS" --seed 0 --student-steps 2 --set distill_parts=head --set lr=5e-5 \
  --set teacher_steps=8 --set head_temperature=0.85 --set eval_every=250
mkdir -p avatar/assets/motion
cp "$RUN/student/model/config.json" "$RUN/student/model/motion_weights.npz" avatar/assets/motion/
echo "train_motion.sh: avatar/assets/motion updated from $RUN/student/model"
