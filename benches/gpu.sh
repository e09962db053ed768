#!/usr/bin/env bash
# One prepared GPU script for wgpu: on a GPU machine, given a recforge
# binary built elsewhere, it times training steps on wgpu beside flex on
# the same machine's CPU (the MovieLens and H&M shapes of `bench train`)
# and runs the calibrated H&M pipeline with its models trained on the GPU,
# then writes one results table.
#
#   benches/gpu.sh fetch                      # here: the Vulkan loader's .debs into .gl/ (git-ignored), to carry
#   benches/gpu.sh run --bin BIN --out DIR [--size small|full] [--steps N]
#   benches/gpu.sh run --dry-run --bin BIN --out DIR   # here, on lavapipe, tiny shapes
#
# The GPU machine has no network: what wgpu needs beyond NVIDIA's driver (it
# provides the Vulkan ICD) is the Vulkan loader, carried as Debian packages
# in .gl/ and unpacked there. `--dry-run` takes every step with tiny shapes
# and a tiny pipeline on Mesa's software driver, so the script cannot fail
# on a typo when a GPU machine is at hand (benches/results/gpu_dry_run.md
# holds its last output).
#
# The `cuda` feature is not used: it cannot be built without internet
# access (cubecl-cuda's LLVM download); wgpu is the GPU path that builds
# offline.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
}

fetch() {
    mkdir -p .gl
    grep -qx '/.gl/' .git/info/exclude 2>/dev/null || echo '/.gl/' >>.git/info/exclude
    (cd .gl && apt-get download libvulkan1)
    ls -l .gl
}

# The Vulkan loader: the system's, else the carried one.
loader() {
    if ldconfig -p | grep -q 'libvulkan\.so\.1'; then
        return
    fi
    local debs=(.gl/*.deb)
    if [ ! -e "${debs[0]}" ]; then
        echo "gpu.sh: no Vulkan loader here and none carried in .gl/ (run 'benches/gpu.sh fetch' where apt works)" >&2
        exit 1
    fi
    for f in "${debs[@]}"; do dpkg -x "$f" /; done
    ldconfig
}

run() {
    local bin="" out="" size="small" steps=5 dry=0
    while [ $# -gt 0 ]; do
        case "$1" in
        --bin) bin="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --size) size="$2"; shift 2 ;;
        --steps) steps="$2"; shift 2 ;;
        --dry-run) dry=1; shift ;;
        *) usage ;;
        esac
    done
    [ -n "$bin" ] && [ -n "$out" ] || usage
    [ -x "$bin" ] || { echo "gpu.sh: $bin is not an executable recforge" >&2; exit 1; }
    case "$size" in small | full) ;; *) usage ;; esac
    mkdir -p "$out"
    local work
    work=$(mktemp -d)
    trap 'rm -rf "$work"' RETURN

    loader
    local what only pipeline_size
    if [ "$dry" = 1 ]; then
        # Mesa's lavapipe: a software adapter, so `--device wgpu` (not auto).
        export VK_ICD_FILENAMES=${VK_ICD_FILENAMES:-$(ls /usr/share/vulkan/icd.d/lvp_icd.*.json | head -1)}
        what="dry run on $(uname -m), Mesa lavapipe (software Vulkan)"
        only="tiny"
        steps=1
        pipeline_size="tiny"
    else
        local icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
        if [ -e "$icd" ] && [ -z "${VK_DRIVER_FILES:-}" ]; then export VK_DRIVER_FILES=$icd; fi
        what=$(nvidia-smi -L 2>/dev/null | head -1 || echo "no nvidia-smi")
        only=""
        pipeline_size="$size"
    fi
    local cores
    cores=$(nproc)
    {
        echo "# benches/gpu.sh: wgpu beside flex"
        echo
        echo "- machine: $what; $cores CPU cores; $("$bin" --version)"
        echo "- started $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo
    } >"$out/gpu.md"

    # 1. Training steps: every shape on wgpu and on flex, one table.
    local t0=$SECONDS
    "$bin" bench train --devices wgpu,flex --steps "$steps" --only "$only" --out "$work/train.md" \
        2>&1 | tee "$out/train.log"
    sed '1,/^$/d' "$work/train.md" >>"$out/gpu.md"
    echo "(${steps} timed steps per shape and device; $((SECONDS - t0)) s in all)" >>"$out/gpu.md"

    # 2. The pipeline with its models trained on wgpu.
    local cfg="$work/pipeline.toml"
    case "$pipeline_size" in
    tiny)
        printf 'customers = 1500\narticles = 300\ndays = 63\nseed = 5\n' >"$work/synth.toml"
        cat >"$cfg" <<EOF
name = "gpu_dry_run"
submission = false
[data]
synth = "$work/synth.toml"
[retrieval]
experiment = "$PWD/tests/fixtures/tiny/two_tower.toml"
[ranker]
experiment = "$PWD/tests/fixtures/tiny/sasrec.toml"
[candidates]
two_tower = 20
sasrec = 20
[trees]
weeks = 1
max_rounds = 20
patience = 5
EOF
        ;;
    small | full)
        # The calibrated preset (datasets/synth-hm*.toml) through the 30k
        # pipeline's models, the ranker with every epoch its config asks for
        # (no epoch_units cap): what the CPU runs had to cut.
        local synth=datasets/synth-hm-small.toml
        [ "$pipeline_size" = full ] && synth=datasets/synth-hm.toml
        sed -e "s|^name = .*|name = \"gpu_$pipeline_size\"|" \
            -e "s|^synth = .*|synth = \"$synth\"|" \
            experiments/hm_pipeline.toml >"$cfg"
        ;;
    esac
    t0=$SECONDS
    "$bin" --report-resources run "$cfg" --device wgpu --run-dir "$work/run" --report-dir "$out/pipeline" \
        2>&1 | tee "$out/pipeline.log"
    {
        echo
        echo "## Pipeline ($pipeline_size), models on wgpu: $((SECONDS - t0)) s"
        echo
        # The results table's first rows (the served system and its ablations).
        sed -n '/^| model/,/^$/p' "$out/pipeline/results.md" 2>/dev/null | head -12 || true
        echo
        sed -n '/^| step/,/^$/p' "$out/pipeline/stages.md" 2>/dev/null || true
        echo
        echo "Full report: pipeline/ beside this file; logs: train.log, pipeline.log."
    } >>"$out/gpu.md"
    cat "$out/gpu.md"
}

case "${1:-}" in
fetch) fetch ;;
run) shift; run "$@" ;;
*) usage ;;
esac
