#!/usr/bin/env bash
# The GPU path, checked on a machine with an NVIDIA GPU (CI has none and does not run this).
# Prints one line per check (PASS/FAIL name: what was measured) and exits 1 if any failed.
#   1 train   a small model trains on CUDA in channels_last under bf16 autocast (fp16 + grad scaler
#             where the GPU has no native bf16), loss finite, accuracy above chance
#   2 latency CUDA latency of a zoo model (synchronised, median of repeats), batch 1 and 32
#   3 search  a 2-trial search sharing the GPU (fractional GPUs: 0.5 each), both trials on CUDA
#   4 weights the trained model saved as safetensors and reloaded gives the same logits on the GPU
#   5 device  --device cuda:N with a bad N: one line, exit 2
# Usage: bash scripts/gpu_check.sh [WORK_DIR]   (the package must be installed: bash scripts/install.sh)
set -uo pipefail
cd "$(dirname "$0")/.."
WORK="${1:-$(mktemp -d)}"
mkdir -p "$WORK"
PY="${PYTHON:-python3}"
FAILED=0
line() { echo "$1"; case "$1" in FAIL*) FAILED=1 ;; esac; }

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "FAIL cuda: torch sees no CUDA device (torch $("$PY" -c 'import torch; print(torch.__version__)'))"
  exit 1
fi
echo "INFO $("$PY" -c 'import torch; p=torch.cuda.get_device_properties(0); print(f"{p.name}, {p.total_memory/2**30:.0f} GiB, capability {p.major}.{p.minor}, torch {torch.__version__}, CUDA {torch.version.cuda}, native bf16 {torch.cuda.is_bf16_supported(including_emulation=False)}")')"

# 1 + 4: train and keep a small model on the GPU, then reload it
if nas train van_b0 --data digits --epochs 2 --proxy-resolution 32 --proxy-width 0.5 --device cuda \
     --no-progress --save "$WORK/trained" --json >"$WORK/train.json" 2>"$WORK/train.err"; then
  line "$("$PY" - "$WORK/train.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
ok = r["device"].startswith("cuda") and r["precision"] in ("bf16", "fp16") and r["val_acc"] > 0.2
print(f"{'PASS' if ok else 'FAIL'} train: {r['name']} on {r['device']} in {r['precision']} autocast, channels_last: "
      f"val_acc {r['val_acc']:.4f} after {r['epochs']} epochs, {r['images_per_second']:.0f} images/s")
EOF
)"
  line "$("$PY" - "$WORK/trained" <<'EOF'
import sys, torch
from safetensors.torch import load_file
from search_space import ArchConfig, build_model
d = sys.argv[1]
a = build_model(ArchConfig.load(f"{d}/config.yaml"))
a.load_state_dict(load_file(f"{d}/model.safetensors"))
a = a.cuda().eval().to(memory_format=torch.channels_last)
b = build_model(ArchConfig.load(f"{d}/config.yaml"))
b.load_state_dict(load_file(f"{d}/model.safetensors", device="cuda:0"))
b = b.cuda().eval()
x = torch.randn(8, 3, 32, 32, device="cuda")
with torch.no_grad():
    diff = (a(x.contiguous(memory_format=torch.channels_last)) - b(x)).abs().max().item()
print(f"{'PASS' if diff <= 1e-4 else 'FAIL'} weights: safetensors saved on the GPU, reloaded twice (to CPU then "
      f"moved, straight to cuda:0): max abs logit difference {diff:.2e}")
EOF
)"
else
  line "FAIL train: $(tail -1 "$WORK/train.err")"
  line "FAIL weights: nothing trained to reload"
fi

# 2: CUDA latency
for batch in 1 32; do
  if nas latency cmt_ti --latency-device cuda --latency-batch-size "$batch" --json >"$WORK/latency$batch.json" 2>"$WORK/latency.err"; then
    line "$("$PY" - "$WORK/latency$batch.json" "$batch" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
ms = r.get("latency_ms") or r.get("median_ms") or r.get("ms")
ok = isinstance(ms, (int, float)) and 0 < ms < 1000
print(f"{'PASS' if ok else 'FAIL'} latency: cmt_ti at batch {sys.argv[2]} on CUDA: {ms} ms median ({json.dumps({k: v for k, v in r.items() if k in ('device', 'resolution', 'repeats', 'p90_ms')})})")
EOF
)"
  else
    line "FAIL latency: batch $batch: $(tail -1 "$WORK/latency.err")"
  fi
done

# 3: a 2-trial search sharing one GPU
if nas search --budget 1GFLOPs --trials 2 --concurrency 2 --epochs 1 --data digits --out "$WORK/search" \
     >"$WORK/search.out" 2>&1; then
  line "$("$PY" - "$WORK/search" "$WORK/search.out" <<'EOF'
import json, pathlib, sys
run, out = pathlib.Path(sys.argv[1]), open(sys.argv[2]).read()
devices = []
for f in sorted(run.glob("trials/*/result.json")):
    r = json.loads(f.read_text())
    if r.get("trained"):
        devices.append(r.get("device"))
shared = "0.5 GPU" in out
ok = shared and len(devices) >= 2 and all(str(d).startswith("cuda") for d in devices)
print(f"{'PASS' if ok else 'FAIL'} search: 2 trials at concurrency 2, {'0.5 GPU each' if shared else 'GPU share not reported'}; "
      f"trial devices {devices}")
EOF
)"
else
  line "FAIL search: $(tail -1 "$WORK/search.out")"
fi

# 5: a bad device index
N="$("$PY" -c 'import torch; print(torch.cuda.device_count())')"
err="$(nas train van_b0 --data digits --device "cuda:$N" --epochs 1 2>&1 >/dev/null)"; rc=$?
if [ "$rc" = 2 ] && [ "$(printf '%s\n' "$err" | wc -l)" = 1 ]; then
  line "PASS device: --device cuda:$N (only $N GPU(s)): exit 2, '$err'"
else
  line "FAIL device: --device cuda:$N gave exit $rc: $err"
fi

exit "$FAILED"
