#!/bin/bash
# On a lent GPU: train variants of shapes-t2v-one side by side, evaluate them, bring back the two best.
# usage: [NO_MODELS=1] [LONG_CLIPS=8] bash scripts/gpu_t2v.sh TRAIN_MINUTES VARIANT...
# ("init" is also scored with frame-local attention; train logs come back in $OUT/t2v_logs.tar)
set -u
minutes=$1; shift
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
W=/tmp/sweep; mkdir -p $W
nvidia-smi --query-gpu=name,memory.used --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"
for v in "$@"; do
  python3 scripts/t2v_sweep.py train $v $W --max-minutes $minutes > $W/$v.log 2>&1 &
done
wait
for v in "$@"; do tail -1 $W/$v.log; tail -1 $W/$v/train_log.jsonl; done
(cd $W && tar cf $OUT/t2v_logs.tar */train_log.jsonl *.log)
for v in "$@"; do
  extra=""; [ $v = init ] && extra=--local
  python3 scripts/t2v_sweep.py eval $W $W/$v-res.json $v --long-clips ${LONG_CLIPS:-8} $extra > $W/$v-eval.log 2>&1 &
done
wait
for v in "$@"; do tail -3 $W/$v-eval.log; done
python3 - "$@" <<'PY'
import json, sys, os
res = {}
for v in sys.argv[1:]:
    try: res.update(json.load(open(f"/tmp/sweep/{v}-res.json")))
    except Exception as e: print(v, "no result", e)
json.dump(res, open(os.environ["OUT"] + "/results.json", "w"), indent=1)
def key(v):
    t = res[v]["text_to_video"]; return (t["shape_accuracy_per_frame"] >= 0.75, t["direction_accuracy"] or 0)
best = sorted(res, key=key, reverse=True)[:2]
print("best", best)
open("/tmp/sweep/best.txt", "w").write(" ".join(best))
PY
[ -n "${NO_MODELS:-}" ] && exit 0
cd $W && for v in $(cat best.txt); do tar cf - $v-model | split -b 15M - $OUT/$v-model.tar.part; done
ls -la $OUT
