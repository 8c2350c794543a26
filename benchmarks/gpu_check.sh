#!/usr/bin/env bash
# GPU check, for when a GPU machine is lent (under 5 minutes on one H100/H200):
#   1. the environment: CUDA visible, bf16 supported, the attention kernel transformers picks (SDPA);
#   2. `make bench` on the GPU (ViT-B/32 architecture, random weights), with torch.compile measured;
#   3. a smoke training of every method on the GPU (tiny model, phantoms, bf16 autocast),
#      2 epochs each, checking that each run recorded device cuda and precision bf16;
#   4. a 2-GPU DDP run under `accelerate launch` when two or more GPUs are visible.
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
from vptlib.backbone import load_clip, vit_b32_config
from transformers import CLIPModel
assert torch.cuda.is_available(), "no CUDA GPU visible"
print("gpu:", torch.cuda.get_device_name(0), "| count:", torch.cuda.device_count(),
      "| bf16:", torch.cuda.is_bf16_supported(), "| torch", torch.__version__)
m = CLIPModel(vit_b32_config())
print("attention implementation:", m.config._attn_implementation)
assert m.config._attn_implementation == "sdpa", "transformers did not pick SDPA"
PY

echo "== benchmark"
$PY -m vptlib.bench --device cuda --compile --no-accuracy --steps 5 --warmup 2 --out "$OUT_DIR"

echo "== smoke training of every method on the GPU"
[ -f models/tiny-clip/model.safetensors ] || $VPTLIB model tiny --out models/tiny-clip --pretrain-epochs 20
[ -f data/smoke/manifest.csv ] || $VPTLIB book data --profile profiles/smoke.yaml
for m in zero_shot linear vpt_shallow vpt_deep lora full wise_ft clip_contrastive; do
  epochs=2; [ "$m" = zero_shot ] && epochs=0
  $VPTLIB run --method "$m" --data data/smoke --model models/tiny-clip --epochs "$epochs" --batch-size 32 \
    --device cuda --precision auto --profile gpu-check --out runs --quiet
done
$PY - <<'PY'
import json, pathlib
for m in sorted(pathlib.Path("runs/gpu-check").glob("*/*/metrics.json")):
    r = json.loads(m.read_text())
    assert r["device"].startswith("cuda") and r["precision"] == "bf16", (m, r["device"], r["precision"])
    print(f"{r['method']:18s} {r['device']:30s} {r['precision']} test acc {r['test']['accuracy']:.3f} "
          f"{r['images_per_second']:.0f} img/s")
PY

if [ "$($PY -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then
  echo "== DDP on 2 GPUs"
  .venv/bin/accelerate launch --multi_gpu --num_processes 2 -m vptlib run --method vpt_deep --data data/smoke \
    --model models/tiny-clip --epochs 2 --profile gpu-check-ddp --out runs --quiet
fi
echo "gpu check done"
