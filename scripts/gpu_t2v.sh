#!/bin/bash
# Variants of the one-command text-to-video recipe (scripts/t2v_sweep.py) trained side by side on one GPU,
# then evaluated; the two best (shape accuracy >= 75 %, then direction accuracy) are named in OUT/best.txt.
# usage: [OUT=DIR] [LONG_CLIPS=8] bash scripts/gpu_t2v.sh TRAIN_MINUTES VARIANT...
#   OUT: folder for the runs, their model folders, logs and OUT/results.json (default runs/t2v-sweep)
#   ("init", the untrained initialisation, is also scored with frame-local attention)
set -u
minutes=$1; shift
OUT=${OUT:-runs/t2v-sweep}
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.used --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"
for v in "$@"; do
  python3 scripts/t2v_sweep.py train $v "$OUT" --max-minutes $minutes > "$OUT/$v.log" 2>&1 &
done
wait
for v in "$@"; do tail -1 "$OUT/$v.log"; tail -1 "$OUT/$v/train_log.jsonl"; done
for v in "$@"; do
  extra=""; [ $v = init ] && extra=--local
  python3 scripts/t2v_sweep.py eval "$OUT" "$OUT/$v-res.json" $v --long-clips ${LONG_CLIPS:-8} $extra \
    > "$OUT/$v-eval.log" 2>&1 &
done
wait
for v in "$@"; do tail -3 "$OUT/$v-eval.log"; done
OUT=$OUT python3 - "$@" <<'PY'
import json, os, sys
out_dir = os.environ["OUT"]
res = {}
for v in sys.argv[1:]:
    try:
        res.update(json.load(open(f"{out_dir}/{v}-res.json")))
    except Exception as e:
        print(v, "no result", e)
json.dump(res, open(f"{out_dir}/results.json", "w"), indent=1)
def key(v):
    t = res[v]["text_to_video"]
    return (t["shape_accuracy_per_frame"] >= 0.75, t["direction_accuracy"] or 0)
best = sorted(res, key=key, reverse=True)[:2]
print("best", best, "(model folders:", ", ".join(f"{out_dir}/{v}-model" for v in best) + ")")
open(f"{out_dir}/best.txt", "w").write(" ".join(best))
PY
