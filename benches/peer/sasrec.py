"""A PyTorch SASRec of the shapes `recforge bench train` times, for a
side-by-side step benchmark (benches/peer/run.sh runs both in one job).

One step = forward, backward and Adam update, as recforge's: item table
(id embedding + one embedding per item feature), learned positions,
LayerNorm, dropout 0.2, a 2-layer, 2-head, d=64 post-norm causal encoder
(feed-forward 256, exact GELU), the loss at every position:
  - full:    softmax cross-entropy over the whole catalogue;
  - sampled: softmax over the target and 1024 shared negatives drawn from a
             popularity proposal, logits corrected by log Q;
  - gbce:    gSASRec's generalised BCE over 256 shared negatives.
The same batch every step, as recforge's benchmark does.

    python sasrec.py --shape ml-100k --steps 5 --threads 2
"""
import argparse
import json
import math
import time

import torch
from torch import nn
import torch.nn.functional as F

SHAPES = {
    # name: (batch, length, catalogue incl. padding, item features, loss, negatives)
    "ml-100k": (128, 50, 1_683, 0, "full", 0),
    "hm-sampled": (256, 50, 105_543, 10, "sampled", 1024),
    "hm-gbce": (256, 16, 105_543, 10, "gbce", 256),
}


class SasRec(nn.Module):
    def __init__(self, n_items, length, n_features, d=64, layers=2, heads=2, d_ff=256, dropout=0.2):
        super().__init__()
        self.item = nn.Embedding(n_items, d)
        self.features = nn.ModuleList(nn.Embedding(50, d) for _ in range(n_features))
        g = torch.Generator().manual_seed(3)
        codes = torch.randint(1, 50, (n_features, n_items), generator=g)
        codes[:, 0] = 0
        self.register_buffer("codes", codes)
        self.position = nn.Embedding(length, d)
        self.norm = nn.LayerNorm(d, eps=1e-12)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            d, heads, d_ff, dropout, activation="gelu", batch_first=True, norm_first=False
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.normal_(p, std=0.02)

    def item_table(self):  # [n_items, d]
        t = self.item.weight
        for emb, codes in zip(self.features, self.codes):
            t = t + emb.weight[codes]
        return t

    def hidden(self, table, inputs):  # inputs [b, l] -> [b, l, d]
        b, l = inputs.shape
        x = self.dropout(self.norm(table[inputs] + self.position.weight[:l]))
        mask = nn.Transformer.generate_square_subsequent_mask(l)
        return self.encoder(x, mask=mask, is_causal=True)


def step_loss(model, kind, negatives, inputs, targets, log_q, gen):
    table = model.item_table()
    h = model.hidden(table, inputs).reshape(-1, table.shape[1])
    t = targets.reshape(-1)
    if kind == "full":
        return F.cross_entropy(h @ table.T, t)
    negs = torch.multinomial(log_q.exp(), negatives, replacement=True, generator=gen)
    pos = (h * table[t]).sum(-1, keepdim=True)
    neg = h @ table[negs].T
    if kind == "sampled":
        logits = torch.cat([pos - log_q[t][:, None], neg - log_q[negs][None, :]], 1)
        return F.cross_entropy(logits, torch.zeros(len(t), dtype=torch.long))
    # gBCE (t = 0.75): the positive's probability raised to beta.
    alpha = negatives / (table.shape[0] - 1)
    beta = alpha * (0.75 * (1 - 1 / alpha) + 1 / alpha)
    p = torch.sigmoid(pos).clamp_min(1e-10)
    return -(beta * p.log()).mean() - F.logsigmoid(-neg).mean(1).mean()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", choices=SHAPES, required=True)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, required=True)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(3)
    batch, length, n_items, n_features, kind, negatives = SHAPES[a.shape]
    model = SasRec(n_items, length, n_features)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(3)
    inputs = torch.randint(1, n_items, (batch, length), generator=g)
    targets = torch.randint(1, n_items, (batch, length), generator=g)
    counts = 1.0 / torch.arange(1, n_items + 1, dtype=torch.float)
    counts[0] = 0
    log_q = (counts / counts.sum()).clamp_min(1e-30).log()
    model.train()
    for i in range(a.warmup + a.steps):
        if i == a.warmup:
            t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = step_loss(model, kind, negatives, inputs, targets, log_q, g)
        loss.backward()
        opt.step()
    secs = time.perf_counter() - t0
    print(json.dumps({
        "engine": f"PyTorch {torch.__version__}",
        "shape": a.shape,
        "threads": torch.get_num_threads(),
        "ms_per_step": 1e3 * secs / a.steps,
        "sequences_per_s": a.steps * batch / secs,
        "loss": loss.item(),
    }))


if __name__ == "__main__":
    main()
