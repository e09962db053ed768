#!/usr/bin/env python3
"""The second stage's tree library, measured side by side on the same rows.

Reads the rows a pipeline wrote with `[trees] export_rows = true`
(RUN/second-stage-rows-REPORT/: train.parquet, valid.parquet, summary.json)
and trains, on the same training rows, LightGBM (binary log-loss, the
pipeline's settings, early-stopped on the validation week) and PerpetualBooster
(log-loss at a few `budget` values; it has no learning rate or tree size to
tune, which is its selling point). Each model orders every validation
customer's candidates and is scored with the exact MAP@12 the pipeline
reports: customers with no bought candidate count as zero, and the
denominator is min(distinct purchases, 12).

The script first re-scores SASRec's score ordering and checks it against the
pipeline's own figure, so the metric here is the pipeline's. Run it through
benches/second_stage_libs.sh, which makes its own virtualenv.

    python3 benches/second_stage_libs.py runs/hm_pipeline/second-stage-rows-hm_pipeline
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

K = 12
META = {"customer", "label", "week", "truth_items", "has_query"}


def load(path):
    t = pq.read_table(path)
    cols = [c for c in t.column_names if c not in META]
    x = np.column_stack([t[c].to_numpy().astype(np.float32) for c in cols])
    return t, cols, x


def exact_map(table, scores, valid_customers, keep_order=None):
    """Mean AP@12 over all validation customers; `keep_order` (a mask per
    row) marks customers whose candidates keep their own order."""
    cust = table["customer"].to_numpy()
    label = table["label"].to_numpy()
    truth = table["truth_items"].to_numpy()
    bounds = np.flatnonzero(np.diff(cust)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(cust)]])
    total = 0.0
    for s, e in zip(starts, ends):
        if keep_order is not None and keep_order[s]:
            order = np.arange(s, e)
        else:
            # Descending score; ties by position, as a stable sort keeps them.
            order = s + np.argsort(-scores[s:e], kind="stable")
        hits = label[order[:K]] > 0
        if not hits.any():
            continue
        precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
        total += float((precision * hits).sum()) / min(int(truth[s]), K)
    return total / valid_customers


def main():
    rows = Path(sys.argv[1])
    summary = json.loads((rows / "summary.json").read_text())
    n_valid = summary["valid_customers"]
    train, cols, xt = load(rows / "train.parquet")
    valid, vcols, xv = load(rows / "valid.parquet")
    assert cols == vcols, "train and valid columns differ"
    yt = train["label"].to_numpy()
    print(f"train: {len(yt)} rows, {int(yt.sum())} bought; valid: {len(xv)} rows of "
          f"{valid['customer'].to_numpy().max() + 1} customers with a bought candidate, "
          f"{n_valid} validation buyers")

    results = []
    # SASRec's score alone, as the pipeline orders it: the check on the metric.
    score = xv[:, cols.index("sasrec_score")]
    no_query = valid["has_query"].to_numpy() == 0
    m = exact_map(valid, np.nan_to_num(score, nan=-np.inf), n_valid, keep_order=no_query)
    want = summary["score_valid_map"]
    print(f"SASRec score ordering: MAP@12 {m:.4f} (the pipeline's: {want:.4f})")
    # Ties (articles without a vector score -inf) break by article id in the
    # pipeline and by position here, so allow a hair.
    if abs(m - want) > 5e-4:
        sys.exit(f"the metric here disagrees with the pipeline's ({m:.6f} against {want:.6f})")

    import lightgbm as lgb

    params = dict(objective="binary", learning_rate=0.05, num_leaves=63, min_data_in_leaf=50,
                  feature_fraction=0.8, bagging_fraction=0.8, bagging_freq=1, lambda_l2=1.0,
                  seed=2026, deterministic=True, force_col_wise=True, verbosity=-1,
                  metric="map", eval_at=[K], max_bin=255)
    vgroups = np.bincount(valid["customer"].to_numpy())
    t0 = time.perf_counter()
    dtrain = lgb.Dataset(xt, yt, group=np.bincount(train["customer"].to_numpy()))
    dvalid = lgb.Dataset(xv, valid["label"].to_numpy(), group=vgroups, reference=dtrain)
    booster = lgb.train(params, dtrain, 1000, valid_sets=[dvalid],
                        callbacks=[lgb.early_stopping(50, verbose=False)])
    secs = time.perf_counter() - t0
    m = exact_map(valid, booster.predict(xv, num_iteration=booster.best_iteration), n_valid)
    results.append(("LightGBM binary (early-stopped)", booster.best_iteration, secs, m))

    from perpetual import PerpetualBooster

    for budget in (0.5, 1.0, 1.5):
        t0 = time.perf_counter()
        model = PerpetualBooster(objective="LogLoss", budget=budget)
        model.fit(xt, yt)
        secs = time.perf_counter() - t0
        m = exact_map(valid, model.predict(xv), n_valid)
        trees = getattr(model, "number_of_trees", None)
        results.append((f"PerpetualBooster LogLoss, budget {budget}", trees, secs, m))

    print("\n| model | trees | fit s | valid MAP@12 |\n|---|---:|---:|---:|")
    for name, trees, secs, m in results:
        print(f"| {name} | {trees if trees is not None else ''} | {secs:.1f} | {m:.4f} |")
    print("\nThe pipeline's own figures (summary.json, exact, its Rust LightGBM):")
    for s in summary["models"]:
        without = f" without {s['without']}" if s.get("without") else ""
        print(f"  {s['objective']}{without}: {s['rounds']} rounds, valid MAP@12 {s['valid_map']:.4f}")


if __name__ == "__main__":
    main()
