#!/usr/bin/env bash
# Installs everything edgec needs on a Debian/Ubuntu machine: system packages (C compilers, the
# Arm GNU toolchain with newlib, QEMU) and a Python virtual environment in .venv with edgec and
# its test dependencies. Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

pkgs=()
command -v gcc >/dev/null 2>&1 || pkgs+=(gcc libc6-dev)
command -v arm-none-eabi-gcc >/dev/null 2>&1 || pkgs+=(gcc-arm-none-eabi)
dpkg -s libnewlib-arm-none-eabi >/dev/null 2>&1 || pkgs+=(libnewlib-arm-none-eabi)
command -v qemu-system-arm >/dev/null 2>&1 || pkgs+=(qemu-system-arm)
command -v gdb-multiarch >/dev/null 2>&1 || pkgs+=(gdb-multiarch)
command -v make >/dev/null 2>&1 || pkgs+=(make)
command -v cppcheck >/dev/null 2>&1 || pkgs+=(cppcheck)  # MISRA check: scripts/misra.sh
command -v python3 >/dev/null 2>&1 || pkgs+=(python3)
python3 -c "import venv, ensurepip" >/dev/null 2>&1 || pkgs+=(python3-venv)
if [ "${#pkgs[@]}" -gt 0 ]; then
    echo "setup: installing Debian packages: ${pkgs[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
fi

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    python3 -m venv .venv
fi
stamp=.venv/.edgec-setup
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "setup: installing edgec and its dependencies into .venv (torch==2.13.0 CPU build)"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[dev,families,tf,scale,cuda]'
    # norse declares torchvision, whose PyPI builds pull another torch: install it without deps
    # (its real run-time needs, nir/nirtorch/h5py, come with the families extra)
    .venv/bin/python -m pip install -q --no-deps 'norse==1.1.0'
    touch "$stamp"
fi
echo "setup: ok ($(.venv/bin/edgec --version))"
