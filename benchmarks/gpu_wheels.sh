#!/usr/bin/env bash
# Download, here, the wheels that benchmarks/gpu.py needs on the GPU machine and that its image lacks, into .whl/
# (ignored by git), for `run` to carry: carry [".whl"], command `bash benchmarks/gpu.sh`.
#
# The machine (Python 3.12, x86-64, no package index) already has torch, transformers, accelerate, pyarrow,
# pandas, numpy, huggingface-hub, fsspec, xxhash, tqdm, pyyaml, filelock, packaging, safetensors, tokenizers,
# sentencepiece and protobuf (/work/.library/device/KINDS.md). Missing there, with the versions tested here:
#   datasets        the map stages (its other needs are all on the machine)
#   dill            needed by datasets
#   multiprocess    needed by datasets (its py312 wheel)
#   mistral-common  ships the real Mistral tokenizer file (its own needs, pydantic and jsonschema, are not used:
#                   genstruct_datasets.testing only reads the file inside the package)
#   bitsandbytes    the 8-bit and 4-bit rows (its CUDA 13.0 library is in the wheel)
# Every wheel is installed there with --no-deps, so each need is listed here by name.
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=(datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 mistral-common==1.13.1 bitsandbytes==0.50.2)
LIMIT_MIB=60 # the working tree and the carried paths travel together, 64 MiB at most

git check-ignore -q .whl/x.whl || echo /.whl/ >>"$(git rev-parse --git-path info/exclude)"
mkdir -p .whl
for wheel in "${WHEELS[@]}"; do # one version of each: two stop the whole install there
    name=${wheel%%==*}
    rm -f .whl/"${name//-/_}"-*.whl
done
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d .whl "${WHEELS[@]}"

ls -l .whl/*.whl
total=$(cat .whl/*.whl | wc -c)
echo "total: $((total / 1024 / 1024)) MiB ($total bytes) in $(ls .whl/*.whl | wc -l) wheels; limit ${LIMIT_MIB} MiB"
if ((total > LIMIT_MIB * 1024 * 1024)); then
    echo "too big to carry" >&2
    exit 1
fi
