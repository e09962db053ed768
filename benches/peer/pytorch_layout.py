"""Checks `recforge export --layout pytorch` against the reference PyTorch
module of models/README.md, executed from the README itself (so the
documented module is the one checked): `load_state_dict(strict=True)` of the
exported weights, then next-item scores of a few histories against the
inference crate's (through the recforge Python package, on the burn-layout
export of the same run).

    python pytorch_layout.py BURN_BUNDLE TORCH_BUNDLE

Run by benches/peer/pytorch_layout.sh, which exports both and needs the
PyTorch and recforge virtualenvs.
"""
import json
import re
import sys

import torch
from safetensors.torch import load_file

burn_dir, torch_dir = sys.argv[1:3]
readme = open("models/README.md", encoding="utf-8").read()
section = readme[readme.index("## PyTorch layout") :]
code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
scope: dict = {}
exec(code, scope)  # the documented reference module

manifest = json.load(open(f"{torch_dir}/manifest.json"))
model = scope["SasRec"].from_manifest(manifest)
missing = model.load_state_dict(load_file(f"{torch_dir}/model.safetensors"), strict=True)
model.eval()

sys.path.insert(0, "")
import recforge  # noqa: E402  (the .tools/py-venv package, given on PYTHONPATH)

r = recforge.load(burn_dir)
ids = manifest["items"]["ids"]
index = {a: i for i, a in enumerate(ids)}
histories = [ids[1:4], ids[5:6], ids[10:30], ids[-8:]]
worst = 0.0
for h in histories:
    h = h[-manifest["sasrec"]["max_len"] :]
    with torch.no_grad():
        scores = model(torch.tensor([[index[a] for a in h]]))[0]
    q = r.customer_vector([(a, 0.0) for a in h])
    theirs = torch.tensor([sum(x * y for x, y in zip(q, r.item_vector(a))) for a in ids[1:]])
    worst = max(worst, float((scores - theirs).abs().max()))
print(f"strict load_state_dict: {missing}; worst score difference over {len(histories)} histories × {len(ids) - 1} items: {worst:.2e}")
assert worst < 1e-3, worst
