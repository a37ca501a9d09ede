#!/usr/bin/env bash
# Wheels for scripts/gpu_check.sh, for a GPU machine that has PyTorch, transformers, peft and accelerate but not the
# rest of what shoptune's training and evaluation import. Run here (with the network); carry the folder along.
# Usage: bash scripts/gpu_wheels.sh [FOLDER] [PYTHON_VERSION]      (default: .whl and 3.12)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-.whl}
python=${2:-3.12}
mkdir -p "$out"
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
    platforms+=(--platform "$tag")
done
get() { python3 -m pip download -q --only-binary=:all: --python-version "$python" --implementation cp "${platforms[@]}" -d "$out" "$@"; }
# pydantic with its exact pydantic-core; the rest alone (torch, numpy, pyarrow, pandas, huggingface-hub are there).
get "pydantic>=2.7,<3"
get --no-deps "datasets>=3.0,<6" "dill<0.4.1" "multiprocess<0.70.19" "bitsandbytes>=0.45,<1"
# What `python -m shoptune` imports before any check runs: the command line (typer, rich and theirs).
get --no-deps "typer>=0.12,<1" "click>=8.1" "shellingham" "rich>=13,<16" "markdown-it-py" "mdurl" "pygments"
# DeepSpeed ships as source only: built here into a wheel without its compiled ops (it compiles them on the GPU when
# first used); its own small dependencies alongside.
DS_BUILD_OPS=0 python3 -m pip wheel -q --no-deps -w "$out" "deepspeed>=0.16,<1"
get --no-deps "hjson" "py-cpuinfo" "ninja" "msgpack" "einops" "nvidia-ml-py"
rm -f "$out"/typing_extensions-*.whl
echo "wrote $(ls "$out" | wc -l) wheels to $out ($(du -sh "$out" | cut -f1))"
