#!/usr/bin/env bash
# On the device machine, from the repository root (see device/README.md):
#   bash device/check.sh stage p1      one call per parcel: keep its wheels on the machine
#   bash device/check.sh run           the last call: install what is missing, run the check
# Everything goes to $OUT: device-check.log, device-check.json, nvidia-smi.csv.
# Rehearsal without a GPU: PYTHON=.venv/bin/python TILES=64 MODELS=vit_tiny_patch16_224 bash device/check.sh run
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/device-out}
WHEELS=${WHEELS:-/root/rayvit-wheels}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/device-check.log") 2>&1
echo "device check: $(date -u +%FT%TZ) ${1:-run} on $(hostname), $(nproc) CPUs; $($PYTHON -V)"
if [ "${1:-run}" = stage ]; then
    mkdir -p "$WHEELS" && cp device/wheels/"$2"/* "$WHEELS"/ && ls -la "$WHEELS"
    exit 0
fi
command -v nvidia-smi >/dev/null && nvidia-smi -L || echo "device check: no nvidia-smi: a rehearsal, GPU parts skipped"
want=$(cat device/wheels/python-version 2>/dev/null || true)
have=$($PYTHON -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
if [ -d "$WHEELS" ] && [ -n "$want" ] && [ "$want" != "$have" ]; then
    echo "device check: the wheels are for Python $want but this machine has $have: run bash device/fetch.sh $have here, then again"
    exit 3
fi
if [ -d "$WHEELS" ]; then
    for part in "$WHEELS"/*.whl.part-aa; do
        [ -e "$part" ] || break
        whl=${part%.part-aa}; cat "$whl".part-* > "$whl" && rm "$whl".part-*
    done
    $PYTHON -m pip install --no-index --find-links "$WHEELS" ray rasterio shapely fsspec zstandard psutil tqdm pillow
fi
$PYTHON -c "import ray, rasterio, torch, timm, zstandard; print('device check: ray', ray.__version__, 'rasterio', rasterio.__version__, 'torch', torch.__version__, 'timm', timm.__version__)"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} RAY_AUTH_MODE=disabled HF_HUB_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0
$PYTHON -m rayvit.bench.gpu_check --out "$OUT" --tiles "${TILES:-4096}" ${MODELS:+--models "$MODELS"}
echo "device check: done $(date -u +%FT%TZ)"
