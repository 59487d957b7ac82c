#!/usr/bin/env bash
# Run benchmarks/gpu.py on the GPU machine: install the wheels carried in .whl/ (made here by gpu_wheels.sh) into
# /tmp/site, put them and this checkout on PYTHONPATH, and run offline. Extra arguments go to gpu.py.
# With OUT set (the device machine), the JSON and a copy of the log are written there.
set -euo pipefail
cd "$(dirname "$0")/.."

shopt -s nullglob
# mistral-common is carried for its tokenizer file alone: installed, transformers would import it, and it needs
# pydantic, which the machine lacks.
for wheel in .whl/mistral_common-*.whl; do
    mkdir -p /tmp/mistral
    python3 -c 'import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))' \
        "$wheel" mistral_common/data/tokenizer.model.v1 >/tmp/mistral/tokenizer.model.v1
    export GENSTRUCT_MISTRAL_TOKENIZER=/tmp/mistral/tokenizer.model.v1
done
wheels=()
for wheel in .whl/*.whl; do [[ $wheel == .whl/mistral_common-* ]] || wheels+=("$wheel"); done
if ((${#wheels[@]})); then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "${wheels[@]}"
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false

if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; fi
if [[ -n ${OUT:-} ]]; then
    python3 benchmarks/gpu.py "$@" 2>&1 | tee "$OUT/gpu.log"
else
    python3 benchmarks/gpu.py "$@"
fi
