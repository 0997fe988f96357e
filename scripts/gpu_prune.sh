#!/bin/bash
# Depth-pruning fine-tune recipes side by side on one GPU at a fixed step count, each scored by
# `ditkit eval` over 2,000 samples (50 Euler steps), plus the full model's score.
# usage: [OUT=DIR] [CFGS="4 6"] bash scripts/gpu_prune.sh "NAME|ditkit prune flags" ...
#   OUT:  folder for the pruned models, logs and the summary DIR/prune_sweep.json (default runs/prune-sweep)
#   CFGS: guidance scales to score every model at (default: 4, the bundled model's own)
set -u
OUT=${OUT:-runs/prune-sweep}
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
mkdir -p "$OUT"
CFGS=${CFGS:-4}
score() {  # score MODEL_FLAGS NAME: one eval per guidance scale
  for c in $CFGS; do ditkit eval $1 --num-samples 2000 --steps 50 --cfg-scale $c --device cuda --no-progress \
    --json "$OUT/$2-eval-cfg$c.json" >> "$OUT/$2.log" 2>&1; done; }
score "" full &
for spec in "$@"; do
  name=${spec%%|*}; flags=${spec#*|}
  ( ditkit prune --keep 4 --device cuda $flags --out "$OUT/$name" > "$OUT/$name.log" 2>&1 \
    && score "--model $OUT/$name" $name ) &
done
wait
OUT=$OUT CFGS=$CFGS python3 - "$@" <<'PY'
import json, os, sys
out_dir, cfgs = os.environ["OUT"], os.environ["CFGS"].split()
specs = dict(s.split("|", 1) for s in sys.argv[1:])
out = {}
for name in ["full", *specs]:
    r = {"flags": specs.get(name, "")}
    try:
        r["accuracy"] = {c: json.load(open(f"{out_dir}/{name}-eval-cfg{c}.json"))["accuracy"] for c in cfgs}
    except Exception as e:
        r["error"] = repr(e)[:200]
        r["log"] = open(f"{out_dir}/{name}.log").read()[-1500:]
    if name != "full" and os.path.exists(f"{out_dir}/{name}/prune.json"):
        p = json.load(open(f"{out_dir}/{name}/prune.json"))
        r.update(kept=p["kept"], losses=p["losses"], steps=(p["finetune"] or {}).get("steps"), seconds=p["seconds"])
    out[name] = r
    print(name, r.get("accuracy"), r.get("steps"), r.get("kept"), r.get("losses"), r.get("error", ""))
json.dump(out, open(f"{out_dir}/prune_sweep.json", "w"), indent=1)
PY
