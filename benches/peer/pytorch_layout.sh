#!/usr/bin/env bash
# `recforge export --layout pytorch` against the reference PyTorch module in
# models/README.md (executed from the README): two tiny SASRec runs on a
# generated log (post-norm and pre-norm, with item features), each exported
# both ways; the PyTorch file must load with load_state_dict(strict=True)
# and score like the inference crate. Writes
# benches/results/pytorch_layout.md. Uses the PyTorch virtualenv of
# benches/peer/run.sh and the package of scripts/python-package.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin="${RECFORGE:-${CARGO_TARGET_DIR:-target}/debug/recforge}"
[ -x "$bin" ] || cargo build --bin recforge
if ! .tools/peer-venv/bin/python -c "import torch, safetensors" 2>/dev/null; then
    python3 -m venv .tools/peer-venv
    .tools/peer-venv/bin/pip install -q --disable-pip-version-check "torch==2.15.0" numpy safetensors
fi
.tools/py-venv/bin/python -c "import recforge" 2>/dev/null || scripts/python-package
site=$(.tools/py-venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin" synth --out "$work/raw" --customers 2000 --articles 300 --days 60 --seed 4 >/dev/null
"$bin" prepare --data "$work/raw" --out "$work/cache" >/dev/null
out=benches/results/pytorch_layout.md
{
    echo "# \`export --layout pytorch\` against the reference module of models/README.md"
    echo
    echo "\`benches/peer/pytorch_layout.sh\`, $(date -u +%Y-%m-%d), PyTorch $(.tools/peer-venv/bin/python -c 'import torch; print(torch.__version__)'):"
    echo "tiny SASRec runs (d = 32, 2 layers, item features) on a generated 2,000-customer log, scores of 4 histories"
    echo "over the whole catalogue from the PyTorch module against recforge-infer's."
    echo
} >"$out"
for norm_first in false true; do
    "$bin" train experiments/hm_sasrec.toml --run-dir "$work/run-$norm_first" \
        --set data.cache="$work/cache" --set model.norm_first=$norm_first --set model.d_model=32 \
        --set train.epochs=1 --set train.min_steps=0 --set train.patience=0 >/dev/null 2>&1
    "$bin" export "$work/run-$norm_first" --out "$work/burn-$norm_first" >/dev/null
    "$bin" export "$work/run-$norm_first" --out "$work/torch-$norm_first" --layout pytorch >/dev/null
    line=$(PYTHONPATH="$site" .tools/peer-venv/bin/python benches/peer/pytorch_layout.py \
        "$work/burn-$norm_first" "$work/torch-$norm_first" | tail -1)
    echo "- norm_first = $norm_first: $line" | tee -a "$out"
done
