#!/bin/bash
# lmjax on this host's accelerators: GPT-2 124M (T1024) and BERT-base phase 1 (T128), bfloat16
# compute, random batches, timed by experiments/benchmark.py; prints the devices, then one
# markdown table (ms/step, tokens/s, MFU against the spec-sheet bf16 peak of lmjax/flops.py).
#
#   bash benchmarks/accelerator.sh          # on the GPU/TPU machine, from any folder
#   bash benchmarks/accelerator.sh --cpu    # tiny shapes on the CPU (~20 s): checks the script
#
# Environment: PYTHON (default .venv/bin/python, else python3), STEPS (20), and the batch per
# device, GPT_BATCH (32 on GPUs, 8 on TPUs) and BERT_BATCH (256 on GPUs, 64 on TPUs), multiplied
# by the number of devices (data parallel). The TPU batches are guesses for 16-32 GB chips.
# Attention is `auto`: the kernel each model takes on these devices is in the table.
set -u
cd "$(dirname "$0")/.."
if [ -x .venv/bin/python ]; then PYTHON=${PYTHON:-.venv/bin/python}; else PYTHON=${PYTHON:-python3}; fi
STEPS=${STEPS:-20}
WARMUP=5
CPU=0
if [ "${1:-}" = "--cpu" ]; then
  CPU=1 STEPS=2 WARMUP=1
  export JAX_PLATFORMS=cpu
fi
out=$(mktemp -d)

echo "## Devices"
if [ "$CPU" = 0 ] && command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=index,name,memory.total,driver_version,clocks.max.sm --format=csv
fi
devices=$("$PYTHON" -c "
import jax
kinds = ', '.join(sorted({d.device_kind for d in jax.devices()}))
print(jax.default_backend(), jax.device_count())
print(f'jax {jax.__version__}, backend {jax.default_backend()}, {jax.device_count()} devices: {kinds}')
" 2>"$out/jax.log") || { tail -n 15 "$out/jax.log"; echo "jax did not start ($PYTHON)"; exit 1; }
read -r BACKEND NDEV <<<"$devices"
tail -n +2 <<<"$devices"

case $BACKEND in
  gpu) gpt=${GPT_BATCH:-32} bert=${BERT_BATCH:-256} ;;
  tpu) gpt=${GPT_BATCH:-8} bert=${BERT_BATCH:-64} ;;
  *) gpt=${GPT_BATCH:-1} bert=${BERT_BATCH:-2} ;;
esac
if [ "$CPU" = 1 ]; then  # one layer of width 64, T32: the presets build and step (and this parses)
  shrink=(--config.model.num_layers=1 --config.model.emb_dim=64 --config.model.num_heads=2
    --config.model.mlp_dim=128 --config.data.vocab_size=512 --config.seq_len=32)
  gpt_shrink=("${shrink[@]}") bert_shrink=("${shrink[@]}")
else
  gpt_shrink=() bert_shrink=()
fi

bench() {  # name, then benchmark.py's flags; its JSON line (the last on stdout) to $out/name.json
  local name=$1; shift
  local cmd=("$PYTHON" experiments/benchmark.py "$@" --steps="$STEPS" --warmup="$WARMUP")
  echo; echo "## $name: ${cmd[*]}"
  if "${cmd[@]}" >"$out/$name.out" 2>"$out/$name.log"; then
    tail -n 1 "$out/$name.out" >"$out/$name.json"
  else
    tail -n 15 "$out/$name.log"
  fi
}
bench gpt2_124m --config=configs/gpt2_124m.py:benchmark --config.batch_size=$((gpt * NDEV)) \
  "${gpt_shrink[@]}"
bench bert_base --config=configs/bert_base.py:benchmark --config.batch_size=$((bert * NDEV)) \
  "${bert_shrink[@]}"

echo
"$PYTHON" - "$out" <<'EOF'
import json, os, sys

out = sys.argv[1]
print("| model | params | devices | batch x seq | dtype | attention | ms/step | tokens/s "
      "| tokens/s/device | MFU | peak/device |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
failed = 0
for name in ("gpt2_124m", "bert_base"):
    path = os.path.join(out, name + ".json")
    if not os.path.exists(path):
        failed += 1
        print(f"| {name} | failed: see {os.path.join(out, name + '.log')} | | | | | | | | | |")
        continue
    r = json.load(open(path))
    print(
        f"| {name} | {r['num_params'] / 1e6:.3g}M | {r['num_devices']} x {r['device']} "
        f"| {r['batch_size']} x {r['seq_len']} "
        f"| {r['dtype']} | {r['attention_impl']} | {r['step_ms']:.1f} | {r['tokens_per_sec']:,.0f} "
        f"| {r['tokens_per_sec_per_device']:,.0f} | {100 * r['mfu']:.1f}% "
        f"| {r['peak_flops_per_device'] / 1e12:.3g} TFLOP/s, {r['peak_flops_source']} |"
    )
sys.exit(failed)
EOF
status=$?
[ "$status" = 0 ] && rm -rf "$out"
exit "$status"
