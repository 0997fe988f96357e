#!/bin/bash
# On a lent GPU: depth-pruning fine-tune recipes side by side at a fixed step count, each scored by
# `ditkit eval` over 2,000 samples (50 Euler steps, the model's cfg), plus the full model's score.
# usage: [CFGS="4 6"] bash scripts/gpu_prune.sh "NAME|ditkit prune flags" ...   (results: $OUT/prune_sweep.json)
# CFGS: guidance scales to score every model at (default: the model's own, 4).
set -u
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
W=/tmp/prune; mkdir -p $W
dk() { python3 -c 'import sys; from ditkit.cli import main; sys.exit(main(sys.argv[1:]))' "$@"; }
CFGS=${CFGS:-4}
score() {  # score MODEL_FLAGS NAME: one eval per guidance scale
  for c in $CFGS; do dk eval $1 --num-samples 2000 --steps 50 --cfg-scale $c --device cuda --no-progress \
    --json $W/$2-eval-cfg$c.json >> $W/$2.log 2>&1; done; }
score "" full &
for spec in "$@"; do
  name=${spec%%|*}; flags=${spec#*|}
  ( dk prune --keep 4 --device cuda $flags --out $W/$name > $W/$name.log 2>&1 && score "--model $W/$name" $name ) &
done
wait
CFGS=$CFGS python3 - "$@" <<'PY'
import json, os, sys
out = {}
for name in ["full"] + [s.split("|")[0] for s in sys.argv[1:]]:
    r = {"flags": next((s.split("|", 1)[1] for s in sys.argv[1:] if s.split("|")[0] == name), "")}
    try:
        r["accuracy"] = {c: json.load(open(f"/tmp/prune/{name}-eval-cfg{c}.json"))["accuracy"]
                         for c in os.environ["CFGS"].split()}
    except Exception as e:
        r["error"] = repr(e)[:200]
        r["log"] = open(f"/tmp/prune/{name}.log").read()[-1500:]
    if name != "full" and os.path.exists(f"/tmp/prune/{name}/prune.json"):
        p = json.load(open(f"/tmp/prune/{name}/prune.json"))
        r.update(kept=p["kept"], losses=p["losses"], steps=(p["finetune"] or {}).get("steps"),
                 seconds=p["seconds"])
    out[name] = r
    print(name, r.get("accuracy"), r.get("steps"), r.get("kept"), r.get("losses"), r.get("error", ""))
json.dump(out, open(os.environ["OUT"] + "/prune_sweep.json", "w"), indent=1)
PY
