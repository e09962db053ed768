"""The Python package against the recforge binary on a tiny pipeline it
runs itself: a ranking bundle's answers equal `recforge submit`'s for every
customer; bad bundles and requests raise RecforgeError with recforge's
message; pool changes follow; the shard hash is submit's.

Needs the `recforge` binary: RECFORGE, else $CARGO_TARGET_DIR/debug/recforge,
else target/debug/recforge (the build `.ci/test` makes first)."""

import csv
import os
import shutil
import subprocess

import pytest

import recforge

# The tiny models the Rust pipeline tests and benches/gpu.sh train too.
FIXTURES = os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", "..", "..", "tests", "fixtures", "tiny")
)


def binary():
    path = os.environ.get("RECFORGE") or os.path.join(
        os.environ.get("CARGO_TARGET_DIR", "target"), "debug", "recforge"
    )
    if not os.path.isabs(path):
        path = os.path.join(os.path.dirname(__file__), "..", "..", "..", path)
    assert os.access(path, os.X_OK), f"no recforge binary at {path}: build it first"
    return path


def run(*args):
    out = subprocess.run([binary(), *args], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory):
    """A tiny pipeline run: its ranking bundle, model bundle, cache, the
    serving data as of the bundle's day and the bundle's submission."""
    d = tmp_path_factory.mktemp("pipeline")
    (d / "synth.toml").write_text("customers = 1500\narticles = 300\ndays = 63\nseed = 9\n")
    (d / "p.toml").write_text(
        f"""name = "py"
submission = false
[data]
synth = "{d / 'synth.toml'}"
[retrieval]
experiment = "{os.path.join(FIXTURES, 'two_tower.toml')}"
[ranker]
experiment = "{os.path.join(FIXTURES, 'sasrec.toml')}"
[candidates]
two_tower = 20
sasrec = 20
[trees]
weeks = 1
max_rounds = 30
patience = 10
"""
    )
    run(
        "run", str(d / "p.toml"), "--device", "flex",
        "--run-dir", str(d / "run"), "--report-dir", str(d / "report"),
    )
    bundle = d / "run" / "ranking-py"
    day = recforge.load(str(bundle)).day
    run("serving-data", "--data", str(d / "run" / "cache"), "--out", str(d / "serving"), "--day", str(day))
    run(
        "submit", "--bundle", str(bundle), "--data", str(d / "run" / "cache"),
        "--out", str(d / "submission.csv"),
    )
    return d


def submission(path):
    with open(path, newline="") as f:
        return {r["customer_id"]: r["prediction"].split(" ") for r in csv.DictReader(f)}


def test_ranking_answers_equal_recforge_submit(pipeline):
    r = recforge.load(str(pipeline / "run" / "ranking-py"))
    assert r.kind == "ranking" and r.version.startswith("ranking-py@")
    customers = list(recforge.read_customers(str(pipeline / "serving" / "customers.jsonl"), r.day))
    lists = r.recommend_batch([c[1] for c in customers], [c[2] for c in customers], k=12)
    want = submission(pipeline / "submission.csv")
    assert len(customers) == len(want)
    differ = [c[0] for c, got in zip(customers, lists) if [a for a, _ in got] != want[c[0]]]
    assert not differ, f"{len(differ)} of {len(want)} differ, e.g. {differ[:3]}"
    # One at a time, the same as in a batch.
    cid, history, attributes = customers[0]
    assert r.recommend(history, attributes, k=12) == lists[0]


def test_pool_changes_follow(pipeline):
    r = recforge.load(str(pipeline / "run" / "ranking-py"))
    customers = list(recforge.read_customers(str(pipeline / "serving" / "customers.jsonl"), r.day))
    _, history, attributes = next(c for c in customers if c[1])
    top = r.recommend(history, attributes, k=12)[0][0]
    r.set_available(sold_out=[top])
    assert top not in [a for a, _ in r.recommend(history, attributes, k=12)]
    r.set_available(in_stock=[top])
    assert r.recommend(history, attributes, k=12)[0][0] == top
    with pytest.raises(recforge.RecforgeError, match="not in the item pool"):
        r.set_available(sold_out=["0000000000"])
    size, _ = r.pool_size()
    features = {"product_type_no": "253", "colour_group_code": "9"}
    assert r.add_items([("0999999990", features)]) == size + 1
    assert r.item_vector("0999999990") is not None
    assert r.customer_vector(history, attributes) is not None


def test_model_bundle(pipeline):
    m = recforge.load(str(pipeline / "run" / "models" / "ranker"))
    assert m.kind == "sasrec"
    customers = list(recforge.read_customers(str(pipeline / "serving" / "customers.jsonl"), m.day))
    _, history, _ = next(c for c in customers if c[1])
    got = m.recommend(history, k=5, exclude_purchased=True)
    assert len(got) == 5 and all(s is not None for _, s in got)
    bought = {h[0] for h in history}
    assert not bought & {a for a, _ in got}
    assert [s for _, s in got] == sorted((s for _, s in got), reverse=True)
    # Without history: the bundle's cold-start list, unscored.
    assert all(s is None for _, s in m.recommend([], k=3))


def test_damaged_bundles_raise_recforge_errors(pipeline, tmp_path):
    with pytest.raises(recforge.RecforgeError, match="manifest.json"):
        recforge.load(str(tmp_path))
    bad = tmp_path / "ranker"
    shutil.copytree(pipeline / "run" / "models" / "ranker", bad)
    weights = bad / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(recforge.RecforgeError, match="SHA-256"):
        recforge.load(str(bad))
    r = recforge.load(str(pipeline / "run" / "ranking-py"))
    with pytest.raises(recforge.RecforgeError, match="2 histories but 1 attribute maps"):
        r.recommend_batch([[], []], [{}])


def test_shards_are_submits(pipeline):
    parts = submission(pipeline / "submission.csv")
    out = pipeline / "part-1.csv"
    run(
        "submit", "--bundle", str(pipeline / "run" / "ranking-py"),
        "--data", str(pipeline / "run" / "cache"), "--out", str(out), "--shard", "1/3",
    )
    shard = submission(out)
    assert set(shard) == {c for c in parts if recforge.shard_of(c, 3) == 1}


def test_read_customers_keeps_only_purchases_before_the_day(tmp_path):
    day = recforge.day_number("2020-09-22")
    f = tmp_path / "customers.jsonl"
    f.write_text(
        '{"customer_id": "c1", "history": ['
        '{"article_id": "a", "date": "2020-09-20", "channel": 2}, '
        '{"article_id": "b", "date": "2020-09-22"}, '
        '{"article_id": "c", "date": "2020-09-23"}], "attributes": {"age": "31"}}\n'
    )
    ((cid, history, attributes),) = list(recforge.read_customers(str(f), day))
    assert (cid, history, attributes) == ("c1", [("a", 2.0, 2)], {"age": "31"})
    # Ages given as days ago follow the same rule: 0 is the day served.
    f.write_text(
        '{"customer_id": "c2", "history": ['
        '{"article_id": "d", "days_ago": 3}, {"article_id": "e", "days_ago": 0}, '
        '{"article_id": "f", "days_ago": -2}, {"article_id": "g"}]}\n'
    )
    ((_, history, _),) = list(recforge.read_customers(str(f), day))
    assert history == [("d", 3.0, None)]
    f.write_text('{"customer_id": "c1", "history": [{"article_id": "a", "date": "2020-13-01"}]}\n')
    with pytest.raises(recforge.RecforgeError, match="line 1"):
        list(recforge.read_customers(str(f), day))
