#!/usr/bin/env bash
# The main job: set everything up, compile the example soft-actuator forward model to C, verify the
# generated C against onnxruntime and print the per-node report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
model=examples/soft_actuator_mlp/model.onnx
.venv/bin/edgec compile "$model" -o build/soft_actuator_mlp --name soft_actuator
.venv/bin/edgec verify "$model" --inputs examples/soft_actuator_mlp/inputs.npz
.venv/bin/edgec inspect "$model"
