#!/usr/bin/env bash
# TensorBoard's own reader (pip `tensorboard`'s EventAccumulator) on a
# recforge training run while its first epoch is still going: the step
# losses are there before the epoch ends (the writer flushes every 30 s),
# the resolved config is a text summary, and after the epoch the validation
# scalars sit on the same step axis as the losses. Also checks the
# projector's files. Writes benches/results/tensorboard_check.md.
#
# Installs tensorboard from PyPI into .tools/tb-venv (not part of CI).
# Uses the dev build (`cargo build --bin recforge`) unless RECFORGE names a
# binary.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${RECFORGE:-${CARGO_TARGET_DIR:-target}/debug/recforge}"
if [ ! -x "$bin" ]; then
    cargo build --bin recforge
fi
if [ ! -x .tools/tb-venv/bin/python ]; then
    echo "tensorboard_check: installing tensorboard into .tools/tb-venv (PyPI)" >&2
    python3 -m venv .tools/tb-venv
    .tools/tb-venv/bin/pip install -q --disable-pip-version-check "tensorboard>=2.15,<3"
fi
work=$(mktemp -d)
pid=""
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

"$bin" synth --out "$work/raw" --customers 20000 --articles 4000 --days 182 --seed 3 >/dev/null
"$bin" prepare --data "$work/raw" --out "$work/cache" >/dev/null
cat >"$work/exp.toml" <<EOF
name = "tb_check"
seed = 3
device = "flex"
[data]
cache = "$work/cache"
split = "last-week"
max_len = 50
[model]
d_model = 64
n_heads = 2
n_layers = 2
[train]
batch_size = 128
epochs = 2
# Long enough that the 30 s flush comes well inside the first epoch.
epoch_units = 38400
[eval]
ks = [12]
metric = "map@12"
EOF
"$bin" train "$work/exp.toml" --run-dir "$work/run" >"$work/train.log" 2>&1 &
pid=$!

.tools/tb-venv/bin/python - "$work/run" "$pid" <<'PY' | tee benches/results/tensorboard_check.md
import os, sys, time
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

run, pid = sys.argv[1], int(sys.argv[2])
tb = os.path.join(run, "tensorboard")

def alive():
    # The run writes summary.json last; a process that died says so too.
    if os.path.exists(os.path.join(run, "summary.json")):
        return False
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False

def load():
    ea = EventAccumulator(tb, size_guidance={"scalars": 0, "tensors": 0})
    ea.Reload()
    return ea

start = time.time()
mid = None
while time.time() - start < 600:
    if os.path.isdir(tb):
        ea = load()
        tags = ea.Tags()
        if "train/loss_step" in tags["scalars"]:
            mid = (time.time() - start, ea)
            break
    time.sleep(2)
assert mid, "no step loss reached the event file"
seen_s, ea = mid
tags = ea.Tags()
steps = ea.Scalars("train/loss_step")
valid_then = [t for t in tags["scalars"] if t.startswith("valid/")]
config = ea.Tensors("config")[0].tensor_proto.string_val[0].decode()
print("# TensorBoard's EventAccumulator on a running recforge training\n")
print(f"tensorboard reader: EventAccumulator (tensorboard {__import__('tensorboard').__version__})\n")
print("## While the first epoch runs\n")
print(f"- first read with step losses: {seen_s:.0f} s after the run started;")
print(f"- `train/loss_step` points: {len(steps)} (steps {steps[0].step}..{steps[-1].step}), loss {steps[0].value:.4f} → {steps[-1].value:.4f};")
print(f"- validation scalars at that moment: {len(valid_then)} (the epoch had not ended);")
print(f"- text summary `config` ({len(config.splitlines())} lines), its first lines:\n")
for line in config.splitlines()[:4]:
    print(f"  {line}")
assert not valid_then, "the first read should come mid-epoch"
assert any("name = \"tb_check\"" in l for l in config.splitlines())

while alive() and time.time() - start < 1200:
    time.sleep(5)
ea = load()
epoch = ea.Scalars("train/epoch")
valid = ea.Scalars("valid/MAP@12")
losses = ea.Scalars("train/loss_step")
print("\n## After the run\n")
print("| epoch | ended at step | valid MAP@12 |\n|---:|---:|---:|")
for e, v in zip(epoch, valid):
    assert e.step == v.step
    print(f"| {e.value:.0f} | {e.step} | {v.value:.4f} |")
assert valid[-1].step == losses[-1].step, "epoch scalars share the step axis"
print(f"\nThe last validation point is at step {valid[-1].step}, the step of the last `train/loss_step` point.")
proj = open(os.path.join(tb, "projector_config.pbtxt")).read()
rows = sum(1 for _ in open(os.path.join(tb, "item_embeddings.tsv")))
print(f"\nProjector: `projector_config.pbtxt` names `item_embeddings.tsv` ({rows} item vectors) and its metadata.")
assert "item_embeddings.tsv" in proj
PY
