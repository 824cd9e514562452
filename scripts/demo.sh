#!/usr/bin/env bash
# The main job: set everything up, compile the example soft-actuator forward model, build it as
# Cortex-M4F firmware, run it on the emulated board (QEMU mps2-an386), verify its outputs against
# onnxruntime, and print the profile (exact instructions, estimated cycles, flash, RAM).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
model=examples/soft_actuator_mlp/model.onnx
inputs=examples/soft_actuator_mlp/inputs.npz
edgec=.venv/bin/edgec
$edgec compile "$model" -o build/soft_actuator_mlp/c --name soft_actuator
$edgec build "$model" --target cortex-m4f -o build/soft_actuator_mlp/firmware --name soft_actuator
$edgec verify "$model" --inputs "$inputs"                       # host C vs onnxruntime
$edgec verify "$model" --inputs "$inputs" --target cortex-m4f   # emulated Cortex-M4F vs onnxruntime
$edgec profile "$model" --target cortex-m4f
