#!/usr/bin/env bash
# Here (a machine with the package registries): download the wheels the device check needs
# beside what the device machine has (torch, timm and their dependencies), for its Python
# (default 3.12; `python3 -V` there says), and pack them into parcels of at most 60 MiB, one
# per device call (a call carries at most 64 MiB). A wheel over 40 MiB (ray) is split.
#   bash device/fetch.sh [PYTHON_VERSION]      -> device/wheels/p1, p2, ...
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-3.12}
PIP=${PIP:-.venv/bin/pip}
version() { .venv/bin/python -c "import importlib.metadata as m; print(m.version('$1'))"; }
rm -rf device/wheels && mkdir -p device/wheels/all
# ray (core), rasterio, and what rayvit's encode path imports besides torch/timm, with every
# dependency of theirs (pip resolves them for the device's Python and platform)
PKGS=("ray==$(version ray)" "rasterio==$(version rasterio)" "shapely==$(version shapely)"
      "fsspec==$(version fsspec)" "zstandard==$(version zstandard)" "psutil" "tqdm" "pillow")
"$PIP" download --only-binary=:all: --python-version "$PY" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_12_x86_64 \
    --platform manylinux2010_x86_64 --platform manylinux1_x86_64 --platform any \
    -d device/wheels/all "${PKGS[@]}"
# split what is too big for one parcel with another wheel
cd device/wheels/all
for whl in *.whl; do
    if [ "$(stat -c %s "$whl")" -gt $((40 << 20)) ]; then split -b $((40 << 20)) -a 2 "$whl" "$whl.part-"; rm "$whl"; fi
done
# first-fit into parcels of at most 60 MiB, largest first
n=0; declare -A used
for f in $(ls -S); do
    size=$(stat -c %s "$f"); placed=
    for ((i = 1; i <= n; i++)); do
        if [ $((used[$i] + size)) -le $((60 << 20)) ]; then mv "$f" "../p$i/"; used[$i]=$((used[$i] + size)); placed=1; break; fi
    done
    if [ -z "$placed" ]; then n=$((n + 1)); mkdir -p "../p$n"; mv "$f" "../p$n/"; used[$n]=$size; fi
done
cd .. && rmdir all
for ((i = 1; i <= n; i++)); do echo "device/wheels/p$i: $(du -sh "p$i" | cut -f1), $(ls "p$i" | wc -l) files"; done
echo "$PY" > python-version
