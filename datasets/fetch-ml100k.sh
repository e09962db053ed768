#!/usr/bin/env bash
# Fetches MovieLens-100k in RecBole's atomic format from the `recbole` wheel
# on PyPI (the wheel ships recbole/dataset_example/ml-100k/). MovieLens may not
# be redistributed: the files land in data/ml-100k (git-ignored), never in git.
#
# Usage: datasets/fetch-ml100k.sh [OUT_DIR]     (default: data/ml-100k)
set -euo pipefail
out=${1:-data/ml-100k}
if [ -f "$out/ml-100k.inter" ]; then
  echo "already present: $out/ml-100k.inter"
  exit 0
fi
py=$(command -v python3 || command -v python) || { echo "python3 with pip is needed to download the wheel" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$py" -m pip download --quiet --no-deps --only-binary=:all: --dest "$tmp" recbole==1.2.1
wheel=$(ls "$tmp"/recbole-*.whl)
mkdir -p "$out"
"$py" - "$wheel" "$out" <<'PY'
import sys, zipfile, os
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if "/dataset_example/ml-100k/ml-100k." in n and n.rsplit(".", 1)[-1] in ("inter", "item", "user")]
    if not names:
        sys.exit("the wheel has no dataset_example/ml-100k files")
    for n in names:
        dest = os.path.join(out, os.path.basename(n))
        with z.open(n) as src, open(dest + ".tmp", "wb") as dst:
            dst.write(src.read())
        os.replace(dest + ".tmp", dest)
        print("wrote", dest)
PY
