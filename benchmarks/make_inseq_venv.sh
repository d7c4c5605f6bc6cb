#!/bin/sh
# Create benchmarks/.venv-inseq: inseq (attribution toolkit) for benchmarks/inseq_compare.py.
# Usage: sh benchmarks/make_inseq_venv.sh [VENV] [TRANSFORMERS_VERSION]
#   default: benchmarks/.venv-inseq with our own transformers 5.23.0, to see whether inseq runs on it;
#   sh benchmarks/make_inseq_venv.sh benchmarks/.venv-inseq4 4.53.3   inseq's own supported range (>= 4.53, < 5).
set -eu
VENV=${1:-benchmarks/.venv-inseq}
TRANSFORMERS=${2:-5.23.0}
PYTHON=${PYTHON:-python3}
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
$PIP install torch==2.13.0
$PIP install "transformers==$TRANSFORMERS" gguf==0.19.0 accelerate==1.15.0 safetensors==0.8.0 numpy==2.4.6
# inseq 0.7.1 declares CUDA 11 runtime wheels (nvidia-*-cu11) as hard dependencies: install it without
# them and add the packages it really imports.
$PIP install --no-deps inseq==0.7.1
$PIP install --no-deps captum==0.8.0
$PIP install "jaxtyping>=0.2.25" "typeguard<=2.13.3" matplotlib treescope tqdm rich protobuf sentencepiece
"$VENV/bin/python" -c "import importlib.metadata as m, inseq, transformers; print('inseq', m.version('inseq'), 'transformers', transformers.__version__)"
