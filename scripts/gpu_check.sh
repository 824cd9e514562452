#!/usr/bin/env bash
# On a machine with an NVIDIA GPU (e.g. the lent H200: run as `bash scripts/gpu_check.sh` with
# its own python3): every GPU-only test and the CUDA benches in one run, each step's output in
# ${OUT:-gpu-results}/. A failing step does not stop the others; the exit code is the number of
# failed steps. About 5-8 minutes on an H200.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-results}
mkdir -p "$out"
py=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && py=.venv/bin/python
export PYTHONPATH=.
failed=0
step() {  # step NAME COMMAND...: runs it with its output in $out/NAME.txt, tail on stdout
    local name=$1
    shift
    echo "== $name: $*"
    if ! "$@" > "$out/$name.txt" 2>&1; then
        failed=$((failed + 1))
        echo "   FAILED (see $out/$name.txt)"
    fi
    tail -n 12 "$out/$name.txt"
}
step nvidia-smi nvidia-smi
step tests "$py" -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py tests/test_cuda_layers.py \
    tests/test_batch_sim_cuda.py \
    tests/test_bench_cuda.py tests/test_gpu_sweep_example.py tests/test_blimp_population.py
step bench_cuda "$py" -m bench.cuda --batches 1,1024,65536,1048576 --torch-compile 300 \
    --models mlp_mpc,gru_policy,cnn_small
# ResNet-18 (224x224) through strategy layers (needs the nvidia-cutlass wheel, edgec[cuda]:
# without it the layers tests skip and this step stops with a one-line pip hint), fp32/tf32/bf16, batch 1 and 64, vs torch eager
# and CUDA graphs at the same precision
step bench_cuda_resnet18 "$py" -m bench.cuda --models resnet18 --resnet-batches 1,64 --repeat 20
step bench_batch_sim "$py" -m bench.batch_sim --device cuda --sizes 1,1000,100000
step gpu_sweep "$py" examples/gpu_sweep/gpu_sweep.py -o "$out/gpu_sweep"
step blimp_population "$py" examples/blimp_snn/blimp_snn.py --population 4096 --generations 10 \
    --device cuda
echo "$failed step(s) failed; outputs in $out/"
exit "$failed"
