#!/bin/sh
# Create benchmarks/.venv-lxt: LXT 2.1 (the AttnLRP authors' library) for benchmarks/lxt_compare.py.
# LXT does not import under transformers 5, so it gets its own environment with transformers 4.52.4.
# Usage: sh benchmarks/make_lxt_venv.sh [VENV]   (default benchmarks/.venv-lxt; git ignores it)
set -eu
VENV=${1:-benchmarks/.venv-lxt}
PYTHON=${PYTHON:-python3}
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
# torch first and exactly pinned (the CPU wheel), as in the main environment
$PIP install torch==2.13.0
$PIP install transformers==4.52.4 gguf==0.19.0 accelerate==1.15.0 safetensors==0.8.0 numpy==2.4.6 psutil==7.2.2
# lxt's declared dependencies (bitsandbytes, open_clip_torch, zennit, ...) are not needed for LLMs
$PIP install --no-deps lxt==2.1
# lxt.efficient imports torchvision's ViT module at import time (only for its ViT patch map);
# a two-file stub stands in for it so that torchvision (and a second torch) is not installed.
SITE=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
if ! "$VENV/bin/python" -c "import torchvision" 2>/dev/null; then
    mkdir -p "$SITE/torchvision/models"
    echo '"""Stub: lxt imports torchvision.models.vision_transformer; only its .nn attribute is read."""' \
        > "$SITE/torchvision/__init__.py"
    : > "$SITE/torchvision/models/__init__.py"
    printf '"""Stub for lxt (see benchmarks/make_lxt_venv.sh)."""\nfrom torch import nn  # noqa: F401\n' \
        > "$SITE/torchvision/models/vision_transformer.py"
fi
"$VENV/bin/python" -c "import transformers, lxt.efficient; print('lxt ready: transformers', transformers.__version__)"
