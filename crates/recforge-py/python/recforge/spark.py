"""Batch scoring on Apache Spark: every customer's top K from a bundle,
computed by the recforge package on the executors through ``mapInArrow``.

    python -m recforge.spark score --bundle models/RANKING \\
        --customers serving/ --out recs/ [--submission submission.csv] \\
        [--partitions N] [--k 12] [--master spark://HOST:PORT]

``--customers`` is a directory ``recforge serving-data --format parquet``
wrote (``customers.parquet``, ``purchases.parquet``). Customers are
repartitioned by Spark's Murmur3 hash of the customer id (stable across
runs and balanced; ``recforge.shard_of`` is ``submit --shard``'s hash for
splitting without Spark). The bundle is
shipped to the executors once, as a zip archive Spark unpacks on each
(``SparkContext.addArchive``: Spark ships no local directory to a
cluster), and loaded once per executor process. Recommendations are written as
Parquet (``customer_id``, ``articles``, ``scores``); with ``--submission``,
also the Kaggle CSV in the customers' order, which equals ``recforge
submit``'s for the same bundle and data.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from typing import Iterator

_LOADED: dict = {}


def _recommender(name: str):
    """The bundle shipped as archive `name`, loaded once per executor
    process."""
    if name not in _LOADED:
        from pyspark import SparkFiles

        import recforge

        _LOADED[name] = recforge.load(SparkFiles.get(name))
    return _LOADED[name]


def _score(name: str, k: int, attributes: list):
    """The mapInArrow function: batches of (customer_id, history, row and
    attribute columns) in, (row, customer_id, articles, scores) out."""

    def score(batches: Iterator) -> Iterator:
        import pyarrow as pa

        r = _recommender(name)
        day = r.day
        for b in batches:
            cols = b.to_pydict()
            histories = [
                [(p["article_id"], float(day - p["day"]), p["channel"]) for p in (h or [])]
                for h in cols["history"]
            ]
            attrs = [
                {a: cols[a][i] for a in attributes if cols[a][i] is not None}
                for i in range(b.num_rows)
            ]
            lists = r.recommend_batch(histories, attrs, k=k)
            yield pa.RecordBatch.from_pydict(
                {
                    "row": cols["row"],
                    "customer_id": cols["customer_id"],
                    "articles": [[a for a, _ in l] for l in lists],
                    "scores": [[s for _, s in l] for l in lists],
                },
                schema=pa.schema(
                    [
                        ("row", pa.int64()),
                        ("customer_id", pa.string()),
                        ("articles", pa.list_(pa.string())),
                        ("scores", pa.list_(pa.float64())),
                    ]
                ),
            )

    return score


def score(args) -> dict:
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    import recforge

    builder = SparkSession.builder.appName("recforge-score")
    if args.master:
        builder = builder.master(args.master)
    spark = builder.getOrCreate()
    t0 = time.time()
    try:
        bundle = os.path.abspath(args.bundle)
        day = recforge.load(bundle).day  # the driver's check of the bundle
        staging = tempfile.mkdtemp(prefix="recforge-bundle-")
        archive = shutil.make_archive(
            os.path.join(staging, os.path.basename(bundle.rstrip("/"))), "zip", root_dir=bundle
        )
        name = os.path.basename(archive)
        spark.sparkContext.addArchive(archive)
        customers = spark.read.parquet(os.path.join(args.customers, "customers.parquet"))
        purchases = spark.read.parquet(os.path.join(args.customers, "purchases.parquet"))
        # Oldest first, as the server and submit read histories; nothing on
        # or after the day served.
        # `seq` is each purchase's place in its customer's history.
        history = (
            purchases.where(F.col("day") < day)
            .groupBy("customer_id")
            .agg(
                F.array_sort(
                    F.collect_list(F.struct("seq", "day", "article_id", "channel"))
                ).alias("history")
            )
        )
        attributes = [c for c in customers.columns if c not in ("row", "customer_id")]
        n = args.partitions or spark.sparkContext.defaultParallelism
        table = (
            customers.join(history, "customer_id", "left")
            .repartition(n, "customer_id")
            .select("row", "customer_id", "history", *attributes)
        )
        recs = table.mapInArrow(
            _score(name, args.k, attributes),
            "row long, customer_id string, articles array<string>, scores array<double>",
        )
        recs = recs.cache()
        count = recs.count()
        seconds = time.time() - t0
        recs.drop("row").write.mode("overwrite").parquet(args.out)
        if args.submission:
            rows = recs.orderBy("row").select("customer_id", "articles").collect()
            tmp = args.submission + ".tmp"
            with open(tmp, "w") as f:
                f.write("customer_id,prediction\n")
                for r in rows:
                    f.write(f"{r.customer_id},{' '.join(r.articles)}\n")
            os.replace(tmp, args.submission)
        report = {
            "customers": count,
            "partitions": n,
            "executors": len(spark.sparkContext._jsc.sc().statusTracker().getExecutorInfos()) - 1,
            "seconds": round(seconds, 1),
            "customers_per_s": round(count / seconds, 1),
        }
        print(report)
        return report
    finally:
        spark.stop()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m recforge.spark")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("score", help="every customer's top K on Spark")
    s.add_argument("--bundle", required=True, help="model or ranking bundle directory")
    s.add_argument(
        "--customers", required=True, help="directory of serving-data --format parquet"
    )
    s.add_argument("--out", required=True, help="recommendations (Parquet directory)")
    s.add_argument("--submission", help="also the Kaggle CSV, in the customers' order")
    s.add_argument("--partitions", type=int, default=0, help="default: Spark's parallelism")
    s.add_argument("--k", type=int, default=12)
    s.add_argument("--master", help="e.g. spark://127.0.0.1:7077 (default: the session's)")
    a = ap.parse_args(argv)
    score(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
