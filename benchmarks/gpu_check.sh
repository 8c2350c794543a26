#!/usr/bin/env bash
# GPU check, for when a GPU machine is lent (under 5 minutes on one H100/H200):
#   1. the environment: CUDA visible, bf16 supported, the attention kernel transformers picks (SDPA);
#   2. `make bench` on the GPU (ViT-B/32 architecture, random weights), with torch.compile measured;
#   3. a smoke training of every method on the GPU (tiny model, phantoms, --precision auto),
#      2 epochs each, checking that each run recorded device cuda and the precision auto picks for
#      this GPU (bf16 on compute capability 8.0+, fp16 on 7.x), and that `vptlib predict` on one
#      run's test folder reproduces its predictions.csv;
#   4. a 2-GPU DDP run under `accelerate launch` when two or more GPUs are visible;
#   5. a dry run of the full profile (make book PROFILE=full DRY_RUN=1) on a full-size ViT-B/32 with
#      random weights and 512-pixel phantoms in the Kaggle layout, timed.
# Usage: bash benchmarks/gpu_check.sh   (from the repository root; results under $OUT or benchmarks/results)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-benchmarks/results}"
make install >/dev/null
PY=.venv/bin/python
VPTLIB=.venv/bin/vptlib
export HF_HUB_OFFLINE=1

echo "== environment"
$PY - <<'PY'
import torch
from vptlib.models.backbone import load_clip
from vptlib.models.offline import vit_b32_config
from transformers import CLIPModel
assert torch.cuda.is_available(), "no CUDA GPU visible"
print("gpu:", torch.cuda.get_device_name(0), "| count:", torch.cuda.device_count(),
      "| capability:", torch.cuda.get_device_capability(0), "| torch", torch.__version__)
m = CLIPModel(vit_b32_config())
print("attention implementation:", m.config._attn_implementation)
assert m.config._attn_implementation == "sdpa", "transformers did not pick SDPA"
PY

echo "== benchmark"
$PY -m vptlib.bench --device cuda --compile --no-accuracy --steps 5 --warmup 2 --out "$OUT_DIR"

echo "== smoke training of every method on the GPU"
[ -f models/tiny-clip/model.safetensors ] || $VPTLIB model tiny --out models/tiny-clip --pretrain-epochs 20
[ -f data/smoke/manifest.csv ] || $VPTLIB book data --profile profiles/smoke.yaml
for m in $($PY -c "from vptlib.methods import METHODS; print(*METHODS)"); do
  epochs=2; [ "$m" = zero_shot ] && epochs=0
  $VPTLIB run --method "$m" --data data/smoke --model models/tiny-clip --epochs "$epochs" --batch-size 32 \
    --device cuda --precision auto --profile gpu-check --out runs --quiet
done
$PY - <<'PY'
import json, pathlib, torch
from vptlib.runs.devices import resolve_precision
want = resolve_precision("auto", torch.device("cuda"))
for m in sorted(pathlib.Path("runs/gpu-check").glob("*/*/metrics.json")):
    r = json.loads(m.read_text())
    assert r["device"].startswith("cuda") and r["precision"] == want, (m, r["device"], r["precision"], want)
    print(f"{r['method']:18s} {r['device']:30s} {r['precision']} test acc {r['test']['accuracy']:.3f} "
          f"{r['images_per_second']:.0f} img/s")
PY
run_dir=$(ls -d runs/gpu-check/vpt_deep/*/ | tail -n 1)
$VPTLIB predict "$run_dir" data/smoke/images/test --device cuda --quiet --out /tmp/gpu-check-preds.csv >/dev/null
$PY - "$run_dir" <<'PY'
import sys, numpy as np, pandas as pd
saved = pd.read_csv(f"{sys.argv[1]}/predictions.csv").query("split == 'test'")
ours = pd.read_csv("/tmp/gpu-check-preds.csv")
ours.index = ours.path.str.split("/images/").str[-1]
saved.index = saved.path.str.replace("images/", "", n=1)
ours = ours.loc[saved.index]
assert list(ours.pred) == list(saved.pred), "vptlib predict disagrees with the run's classes"
diff = np.abs(ours.filter(like="prob_").to_numpy() - saved.filter(like="prob_").to_numpy()).max()
print(f"vptlib predict reproduces predictions.csv on the GPU: max |dp| = {diff:.2e}")
assert diff <= 1e-6
PY

if [ "$($PY -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then
  echo "== DDP on 2 GPUs"
  .venv/bin/accelerate launch --multi_gpu --num_processes 2 -m vptlib run --method vpt_deep --data data/smoke \
    --model models/tiny-clip --epochs 2 --profile gpu-check-ddp --out runs --quiet
fi
echo "== dry run of the full profile on a full-size random ViT-B/32"
[ -f models/vit-b32-random/model.safetensors ] || $PY - <<'PY'
import torch
from transformers import CLIPModel
from vptlib.models.offline import save_clip, vit_b32_config
torch.manual_seed(0)
save_clip(CLIPModel(vit_b32_config()).eval(), "models/vit-b32-random")
PY
[ -d data/kaggle-phantoms ] || $VPTLIB data phantoms --out data/kaggle-phantoms --per-class 200 --size 512
start=$(date +%s)
make book PROFILE=full DRY_RUN=1 DATA=data/kaggle-phantoms MODEL=models/vit-b32-random
echo "dry run of the full profile: $(( $(date +%s) - start )) s on the GPU"
echo "gpu check done"
