#!/usr/bin/env bash
# Seeded, reproducible training of the demo EMO checkpoint (configs/emo/demo.yaml: the mouth region):
# synthetic clips (parametric engine, shared portraits and speech + espeak-ng voices) and the shared real
# talking clips → stages 0..3 → stage 2 again with audio drop → 2-step LCM student of the audio-guided
# teacher. Held out of training for the report: the portraits pearl_earring and photo_woman_outdoor, and
# Italian (speech/italian1.wav and the espeak "it" line).
# Usage: scripts/train_demo.sh [RUN_DIR] [SCALE]   SCALE multiplies every step count (1 ≈ 2 h on one core).
# Environment: MEDIA (default ../shared/media), THREADS (default 1: with 2, training slowed 10-40x whenever
# another process used the second core), CLIPS (default 80), GUIDANCE (distilled audio guidance, default 5).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/demo}
SCALE=${2:-1}
MEDIA=${MEDIA:-../shared/media}
THREADS=${THREADS:-1}
CLIPS=${CLIPS:-80}
GUIDANCE=${GUIDANCE:-5}
PY=${PY:-.venv/bin/python}
CFG=configs/emo/train_demo.yaml
HELD_OUT_PORTRAITS="pearl_earring.jpg photo_woman_outdoor.jpg"
HELD_OUT_SPEECH="italian1.wav"
steps() { awk -v s="$SCALE" -v n="$1" 'BEGIN { v = int(n * s); print (v < 1 ? 1 : v) }'; }
mkdir -p "$RUN/portraits" "$RUN/speech"
for f in "$MEDIA"/portraits/*; do
  case " $HELD_OUT_PORTRAITS " in *" $(basename "$f") "*) ;; *) ln -sfn "$(realpath "$f")" "$RUN/portraits/";; esac
done
for f in "$MEDIA"/speech/*; do
  case " $HELD_OUT_SPEECH " in *" $(basename "$f") "*) ;; *) ln -sfn "$(realpath "$f")" "$RUN/speech/";; esac
done
export PYTHONHASHSEED=0
$PY -m avatar prepare-data --synthetic --portraits "$RUN/portraits" --speech "$RUN/speech" \
    --voices en,es,fr,de,pt,ru,hi,cmn,ja --out "$RUN/data" --config demo --clips "$CLIPS" \
    --max-seconds 4 --render-size 448 --seed 0 --quiet
if [ -d "$MEDIA/talking" ]; then
  $PY -m avatar prepare-data --videos "$MEDIA/talking" --out "$RUN/data" --config demo --quiet
fi
common=(--config "$CFG" --data "$RUN/data" --threads "$THREADS" --quiet)
$PY -m avatar train "${common[@]}" --stage 0 --out "$RUN/stage0" --steps "$(steps 800)"
$PY -m avatar train "${common[@]}" --stage 1 --out "$RUN/stage1" --init "$RUN/stage0" --steps "$(steps 2000)"
$PY -m avatar train "${common[@]}" --stage 2 --out "$RUN/stage2" --init "$RUN/stage1" --steps "$(steps 1500)"
$PY -m avatar train "${common[@]}" --stage 3 --out "$RUN/stage3" --init "$RUN/stage2" --steps "$(steps 200)"
# stage 2 once more, from stage 3, zeroing the audio of 15% of the windows: the teacher learns the silent
# prediction that audio classifier-free guidance extrapolates from (EMO's audio dropout)
$PY -m avatar train "${common[@]}" --stage 2 --out "$RUN/guided" --init "$RUN/stage3" --steps "$(steps 900)" \
    --set audio_drop=0.15
# the 2-step student learns the guided teacher's ODE (guidance GUIDANCE, default 5) and samples it unguided;
# 600 steps, then 600 more continuing that student (the shipped checkpoint was made in these two runs)
$PY -m avatar distill "${common[@]}" --teacher "$RUN/guided" --out "$RUN/distill600" --steps-student 2 \
    --steps "$(steps 600)" --set audio_guidance="$GUIDANCE"
$PY -m avatar distill "${common[@]}" --teacher "$RUN/guided" --out "$RUN/distill" --steps-student 2 \
    --student "$RUN/distill600" --steps "$(steps 600)" --set audio_guidance="$GUIDANCE"
# float16 copy of the student, the form shipped in avatar/assets/emo_demo/ (with its model card README.md)
$PY - "$RUN/distill/checkpoint" "$RUN/export" <<'PY'
import sys
from avatar.emo.checkpoint import load_checkpoint, save_checkpoint
from avatar.emo.config import load_emo_config
save_checkpoint(load_checkpoint(sys.argv[1], load_emo_config("demo")), sys.argv[2], half=True)
PY
echo "demo done: $RUN (loss.png and samples*.png per stage; student $RUN/distill/checkpoint, float16 $RUN/export)"
