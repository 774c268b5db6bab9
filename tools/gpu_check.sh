#!/usr/bin/env bash
# The GPU check on a machine that has PyTorch but not this project's environment (no internet to build one), e.g.
# a lent GPU machine:   bash tools/gpu_check.sh OUT_DIR [percept bench options, e.g. --only compile]
# It runs `percept bench --suite gpu-check --out OUT_DIR` from this checkout with the machine's python3 ($PYTHON
# to choose another). The check needs torch, torchvision, timm, peft, safetensors, huggingface_hub, pandas, scipy,
# scikit-learn, filelock, pyyaml, tqdm (transformers for the reference path). timm and peft are the libraries
# whose internals we use: `make gpu-wheels` puts the tested versions' wheels in .whl/, and this script installs
# them (no index, no network) into a temporary folder ahead of the machine's own, so the check measures the code
# the tests ran; without .whl/ the machine's versions are used. The check prints the versions it runs with.
set -u
if [ $# -lt 1 ]; then
    echo "usage: bash tools/gpu_check.sh OUT_DIR [percept bench options]" >&2
    exit 2
fi
out=$1
shift
here=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-python3}
site=""
if compgen -G "$here/.whl/*.whl" > /dev/null; then
    site=$(mktemp -d)
    "$py" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
        --target "$site" "$here"/.whl/*.whl \
        || { echo "gpu-check: the wheels in $here/.whl did not install; run make gpu-wheels again" >&2; exit 2; }
    echo "gpu-check: $(cd "$here/.whl" && echo *.whl) installed ahead of the machine's own"
else
    echo "gpu-check: no .whl/ (make gpu-wheels): the machine's own timm and peft"
fi
export PYTHONPATH="${site:+$site:}$here${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$py" -m percept bench --suite gpu-check --out "$out" "$@"
