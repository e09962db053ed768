#!/usr/bin/env bash
# recforge's training step beside PyTorch's, in one job on the same cores:
# for each shape, `recforge bench train` (flex) and benches/peer/sasrec.py
# (PyTorch, as many threads as recforge's rayon pool), one after the other,
# twice in alternating order, then the table with the ratio
# (benches/results/peer.md, or the file given).
#
#   benches/peer/run.sh [--steps N] [--shapes ml-100k,hm-sampled,hm-gbce] [--out FILE]
#
# PyTorch comes from PyPI into .tools/peer-venv (installed here on the
# first run; about 4 GB with the CUDA libraries its Linux wheel requires).
# Not part of CI. Uses the dev build (dependencies optimised, as the tests
# and `cargo run` use) unless RECFORGE names another binary.
set -euo pipefail
cd "$(dirname "$0")/../.."
steps=5
shapes="ml-100k,hm-sampled,hm-gbce"
out=benches/results/peer.md
while [ $# -gt 0 ]; do
    case "$1" in
    --steps) steps="$2"; shift 2 ;;
    --shapes) shapes="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) sed -n '2,14p' "$0"; exit 2 ;;
    esac
done
bin="${RECFORGE:-${CARGO_TARGET_DIR:-target}/debug/recforge}"
[ -x "$bin" ] || cargo build --bin recforge
py=.tools/peer-venv/bin/python
if ! "$py" -c "import torch" 2>/dev/null; then
    echo "peer: installing PyTorch into .tools/peer-venv (PyPI)" >&2
    python3 -m venv .tools/peer-venv
    .tools/peer-venv/bin/pip install -q --disable-pip-version-check "torch==2.15.0" numpy
fi
threads=$(nproc)
# recforge's names for the shapes (`bench train --only`).
only() {
    case "$1" in
    ml-100k) echo "ml-100k" ;;
    hm-sampled) echo "sampled softmax" ;;
    hm-gbce) echo "gBCE" ;;
    esac
}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rows=""
for shape in ${shapes//,/ }; do
    r_ms=()
    t_ms=()
    for round in 1 2; do
        # Alternate which engine goes first, so neither always runs on a
        # machine the other just warmed or loaded.
        for engine in $([ $round = 1 ] && echo "recforge torch" || echo "torch recforge"); do
            if [ "$engine" = recforge ]; then
                RAYON_NUM_THREADS=$threads "$bin" bench train --devices flex --steps "$steps" \
                    --only "$(only "$shape")" --out "$work/r.md" >/dev/null 2>"$work/r.log"
                ms=$(grep '^| ' "$work/r.md" | grep -v '^| shape' | awk -F'|' '{gsub(/ /,"",$4); print $4}')
                r_ms+=("$ms")
            else
                ms=$("$py" benches/peer/sasrec.py --shape "$shape" --steps "$steps" --threads "$threads" |
                    "$py" -c 'import json,sys; print(round(json.load(sys.stdin)["ms_per_step"], 1))')
                t_ms+=("$ms")
            fi
            echo "$shape round $round: $engine ${ms} ms/step" >&2
        done
    done
    rows+=$("$py" - "$shape" "${r_ms[@]}" "${t_ms[@]}" <<'PY'
import sys
shape, r1, r2, t1, t2 = sys.argv[1], *map(float, sys.argv[2:])
r, t = min(r1, r2), min(t1, t2)
print(f"| {shape} | {r1:.1f}, {r2:.1f} | {t1:.1f}, {t2:.1f} | {r / t:.2f}× |")
PY
)$'\n'
done
torch_v=$("$py" -c 'import torch; print(torch.__version__)')
profile=$("$bin" bench train --help >/dev/null 2>&1 && echo "dev profile, dependencies optimised")
[ -n "${RECFORGE:-}" ] && profile="binary $RECFORGE"
cat >"$out" <<EOF
# recforge (burn flex) against PyTorch, one training step, same job and cores

\`benches/peer/run.sh\` on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(date -u +%Y-%m-%d).
recforge: \`recforge bench train --devices flex\` ($profile), rayon on $threads threads.
PyTorch $torch_v (PyPI wheel), \`torch.set_num_threads($threads)\`: benches/peer/sasrec.py, the same shapes.
Each cell: ms per step (forward, backward, Adam) over $steps timed steps after 2 warm-up steps, two rounds in alternating order;
the ratio is recforge's best over PyTorch's best.

| shape | recforge ms/step | PyTorch ms/step | recforge / PyTorch |
|---|---:|---:|---:|
${rows}
Shapes: ml-100k = batch 128, length 50, 1,683 items, full softmax; hm-sampled = batch 256, length 50, 105,543 articles with 10 features, sampled softmax with 1,024 shared negatives; hm-gbce = batch 256, length 16, the same catalogue, gBCE with 256 negatives. Both: d = 64, 2 layers, 2 heads, feed-forward 256, dropout 0.2, post-norm.
EOF
cat "$out"
