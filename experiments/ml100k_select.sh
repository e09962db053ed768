#!/usr/bin/env bash
# MovieLens-100k: choose among the SASRec variants on validation only, then
# report the chosen one's test metrics over 3 seeds (issue: numbers that
# mean something). Each variant trains one seed (the config's, 42) under the
# config's 5-minute budget; they are compared on the selected epoch's
# validation NDCG@10 with seen items masked (the smoother of the two
# curves; the unmasked one is printed beside it). Then the winner runs
# `--seeds 3`. About 40 minutes on 2 cores; nothing else should run.
#
#   datasets/fetch-ml100k.sh data/ml-100k
#   recforge prepare --data data/ml-100k --out data/ml-100k-cache
#   experiments/ml100k_select.sh [RECFORGE_BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/recforge}
out=runs/ml100k-select
mkdir -p "$out"
# Each variant names every setting it stands for: the config's own
# defaults move (norm_first became false when post-norm won), and a variant
# that leaned on them silently became another.
declare -A variants=(
  [disjoint-post-128-unmasked]='data.window_stride=0 model.norm_first=false train.batch_size=128 eval.select_masked=false'
  [disjoint-post-64-unmasked]='data.window_stride=0 model.norm_first=false eval.select_masked=false'
  [disjoint-post-64-masked]='data.window_stride=0 model.norm_first=false'
  [stride25-post-64-masked]='model.norm_first=false'
  [stride25-pre-64-masked]='model.norm_first=true'
)
table="$out/selection.md"
{
  echo "| variant | validation NDCG@10, masked | validation NDCG@10 |"
  echo "|---|---:|---:|"
} > "$table.tmp"
best=""; best_v=-1
for name in $(printf '%s\n' "${!variants[@]}" | sort); do
  sets=()
  for kv in ${variants[$name]}; do sets+=(--set "$kv"); done
  if [ ! -f "$out/$name/seeds.json" ]; then
    rm -rf "$out/$name"
    "$bin" train experiments/ml100k_sasrec.toml "${sets[@]}" --run-dir "$out/$name" --seeds 1 > "$out/$name.log" 2>&1
  fi
  read -r masked plain < <(python3 - "$out/$name/seeds.json" <<'PY'
import json, sys
cols = json.load(open(sys.argv[1]))["columns"]
v = {(c["name"], c["masked"]): c["valid"]["mean"] for c in cols}
print(v[("NDCG@10", True)], v[("NDCG@10", False)])
PY
)
  echo "| $name | $masked | $plain |" >> "$table.tmp"
  if python3 -c "import sys; sys.exit(0 if $masked > $best_v else 1)"; then best=$name; best_v=$masked; fi
done
echo >> "$table.tmp"
echo "chosen on validation: $best" >> "$table.tmp"
mv "$table.tmp" "$table"
cat "$table"
sets=()
for kv in ${variants[$best]}; do sets+=(--set "$kv"); done
# A rerun that chooses another variant retrains the seeds.
if [ ! -f "$out/chosen/seeds.json" ] || [ "$(cat "$out/chosen.variant" 2>/dev/null)" != "$best" ]; then
  rm -rf "$out/chosen"
  echo "$best" >"$out/chosen.variant"
  "$bin" train experiments/ml100k_sasrec.toml "${sets[@]}" --run-dir "$out/chosen" --seeds 3 > "$out/chosen.log" 2>&1
fi
cat "$out/chosen/seeds.md"
