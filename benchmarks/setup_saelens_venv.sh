#!/usr/bin/env bash
# Create benchmarks/.venv-saelens: SAELens in its own environment, for train_throughput.py.
#
# SAELens pins TransformerLens < 4 while saelib uses 4.x, so the two cannot share a venv.
# torch is installed first and pinned to the version saelib's venv uses, so that both
# libraries run the same kernels and sae-lens cannot pull a CUDA build. Idempotent: an
# existing venv with sae-lens importable is left as it is.
#
#   bash benchmarks/setup_saelens_venv.sh            # default pins below
#   TORCH_SPEC=torch==2.13.0 TORCH_INDEX=<url> SAE_LENS_SPEC='sae-lens==6.54.*' bash ...
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${SAELENS_VENV:-$HERE/.venv-saelens}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
TORCH_INDEX="${TORCH_INDEX:-}"
SAE_LENS_SPEC="${SAE_LENS_SPEC:-sae-lens==6.54.*}"

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import sae_lens" 2>/dev/null; then
    echo "SAELens venv ready: $VENV"
    exit 0
fi
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
# torch first, pinned: sae-lens's bare torch requirement is then already satisfied.
"$VENV/bin/pip" install --quiet "$TORCH_SPEC" ${TORCH_INDEX:+--index-url "$TORCH_INDEX"}
"$VENV/bin/pip" install --quiet "$SAE_LENS_SPEC" "$TORCH_SPEC"
"$VENV/bin/python" -c "import sae_lens, torch; print('sae_lens', sae_lens.__version__, 'torch', torch.__version__)"
echo "SAELens venv ready: $VENV"
