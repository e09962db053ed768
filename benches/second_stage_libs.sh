#!/usr/bin/env bash
# LightGBM against PerpetualBooster for the second stage, on the rows of a
# pipeline run (`[trees] export_rows = true`), and each library's own build
# cost from an empty target directory. Writes results/second_stage_libs.md.
#
#   benches/second_stage_libs.sh runs/hm_pipeline/second-stage-rows-hm_pipeline
#
# Needs scripts/setup (Python, cmake); installs numpy, pyarrow, lightgbm and
# perpetual (with scikit-learn, which it imports) into .tools/bench-venv,
# nothing globally.
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:?usage: benches/second_stage_libs.sh RUN/second-stage-rows-REPORT}
venv=.tools/bench-venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check numpy pyarrow lightgbm perpetual scikit-learn
fi
out=benches/results/second_stage_libs.md
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
{
    echo "# Second-stage tree library: LightGBM against PerpetualBooster"
    echo
    echo "Rows: \`$rows\` ($(date -u +%F), $(nproc) cores)."
    echo "Python packages: $("$venv/bin/pip" list --format=freeze 2>/dev/null | grep -Ei '^(lightgbm|perpetual)==' | tr '\n' ' ')"
    echo
    echo '```'
    "$venv/bin/python" benches/second_stage_libs.py "$rows"
    echo '```'
    echo
    echo "## Build cost of each Rust crate, alone, from an empty target directory (release)"
    echo
    echo "| crate | wall s | CPU s |"
    echo "|---|---:|---:|"
    for spec in 'lightgbm3-sys = { version = "1.0.11", features = ["openmp"] }' 'perpetual = "*"'; do
        name=${spec%% *}
        mkdir -p "$tmp/$name/src"
        printf '[package]\nname = "probe"\nversion = "0.0.0"\nedition = "2024"\n[dependencies]\n%s\n' "$spec" > "$tmp/$name/Cargo.toml"
        echo 'fn main() {}' > "$tmp/$name/src/main.rs"
        # Time's own format: wall and user+system seconds of the whole build.
        /usr/bin/env time -f "%e %U %S" -o "$tmp/$name.time" \
            env CMAKE="$PWD/.tools/bin/cmake" cargo build -q --release \
            --manifest-path "$tmp/$name/Cargo.toml" --target-dir "$tmp/$name/target" >/dev/null 2>&1
        read -r wall user sys < "$tmp/$name.time"
        echo "| \`$name\` ($(grep -A1 "^name = \"$name\"" "$tmp/$name/Cargo.lock" | sed -n 's/version = //p' | tr -d '"')) | $wall | $(echo "$user + $sys" | bc) |"
    done
} | tee "$out.tmp"
mv "$out.tmp" "$out"
