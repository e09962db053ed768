#!/usr/bin/env bash
# The Spark batch-scoring job on a real standalone cluster on this machine:
# a master and two workers on 127.0.0.1 (1 core, 1 GiB each), the job
# (`python -m recforge.spark score`) over the 30k synthetic set's every
# customer with a ranking bundle, its Kaggle CSV compared byte for byte
# with `recforge submit`'s, then the same with one worker, each beside
# `recforge submit` on the same cores. The cluster is stopped whatever
# happens; the whole run is bounded by `timeout`. Writes
# benches/results/spark_local.md (or the file given).
#
#   benches/spark_local.sh [OUT.md]
#
# Installs Java 17 and pyspark through `scripts/setup --spark` and the
# recforge wheel through scripts/python-package. Not in CI: pyspark is
# 400 MB to install on every clean clone, and the run takes minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
out_md="${1:-benches/results/spark_local.md}"
bin="${RECFORGE:-${CARGO_TARGET_DIR:-target}/debug/recforge}"
[ -x "$bin" ] || cargo build --bin recforge
scripts/setup --spark
scripts/python-package
venv=.tools/spark-venv
"$venv/bin/pip" install -q --disable-pip-version-check --force-reinstall --no-deps .tools/wheels/recforge-*.whl
export SPARK_HOME
SPARK_HOME=$("$venv/bin/python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
export SPARK_LOCAL_IP=127.0.0.1 PYSPARK_PYTHON="$PWD/$venv/bin/python" PYSPARK_DRIVER_PYTHON="$PWD/$venv/bin/python"

work=$(mktemp -d)
pids=()
stop_cluster() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    pids=()
}
cleanup() {
    stop_cluster
    rm -rf "$work"
}
trap cleanup EXIT

# A ranking bundle for the 30k set, with small models (the job's cost is
# serving, not training).
cat >"$work/sr.toml" <<EOF
seed = 2
device = "flex"
[data]
split = "last-week"
max_len = 20
[model]
d_model = 32
n_heads = 2
n_layers = 1
d_ff = 64
[train]
batch_size = 256
epochs = 1
[eval]
ks = [12]
metric = "map@12"
EOF
cat >"$work/tt.toml" <<EOF
seed = 2
device = "flex"
[data]
split = "last-week"
sample_days = 28
[model]
kind = "two-tower"
d_model = 32
[tower]
feature_dim = 8
hidden = 64
id_buckets = 4096
id_dim = 8
[loss]
kind = "in-batch"
mixed_negatives = 64
[train]
batch_size = 1024
epochs = 1
[eval]
ks = [12, 100]
metric = "recall@100"
EOF
cat >"$work/p.toml" <<EOF
name = "spark"
submission = false
[data]
synth = "datasets/synth-30k.toml"
[retrieval]
experiment = "$work/tt.toml"
[ranker]
experiment = "$work/sr.toml"
[trees]
weeks = 1
max_rounds = 60
patience = 10
EOF
echo "spark_local: a ranking bundle for the 30k set" >&2
"$bin" run "$work/p.toml" --run-dir "$work/run" --report-dir "$work/report" >/dev/null
bundle="$work/run/ranking-spark"
day=$("$venv/bin/python" -c "import recforge, sys; print(recforge.load(sys.argv[1]).day)" "$bundle")
"$bin" serving-data --data "$work/run/cache" --out "$work/serving" --day "$day" \
    --history-len 1000000 --format parquet >/dev/null
calc() { "$venv/bin/python" -c "print($1)"; }
t0=$(date +%s.%N)
"$bin" submit --bundle "$bundle" --data "$work/run/cache" --out "$work/submit.csv" >/dev/null
submit_s=$(calc "round($(date +%s.%N) - $t0, 1)")
customers=$(($(wc -l <"$work/submit.csv") - 1))

port=$((17000 + RANDOM % 1000))
start_cluster() { # workers
    "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.master.Master \
        --host 127.0.0.1 --port "$port" --webui-port $((port + 1)) >"$work/master.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 60); do
        grep -q "I have been elected leader" "$work/master.log" && break
        sleep 1
    done
    for w in $(seq "$1"); do
        "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.worker.Worker \
            "spark://127.0.0.1:$port" --host 127.0.0.1 --cores 1 --memory 1g \
            --webui-port $((port + 10 + w)) >"$work/worker-$w.log" 2>&1 &
        pids+=($!)
    done
    for _ in $(seq 60); do
        [ "$(grep -c "Registering worker" "$work/master.log")" -ge "$1" ] && break
        sleep 1
    done
}

# The job on a fresh cluster of $1 workers, named $2 (output recs-$2, log
# job-$2.log), over the serving data in $3, within $4 seconds, with any
# further arguments; sets job_s to its own timing. Not in a subshell: the
# cluster's pids must stay where the exit trap sees them.
job_s=""
run_job() {
    local workers=$1 name=$2 customers_dir=$3 limit=$4 report
    shift 4
    start_cluster "$workers"
    if ! report=$(timeout "$limit" "$venv/bin/python" -m recforge.spark score \
        --master "spark://127.0.0.1:$port" --bundle "$bundle" --customers "$customers_dir" \
        --out "$work/recs-$name" "$@" 2>"$work/job-$name.log" | tail -1); then
        echo "spark_local: the job failed; its log ends:" >&2
        tail -40 "$work/job-$name.log" >&2
        exit 1
    fi
    stop_cluster
    job_s=$("$venv/bin/python" -c "import ast,sys; print(ast.literal_eval(sys.argv[1])['seconds'])" "$report")
}

rows=""
for workers in 2 1; do
    echo "spark_local: the job on $workers worker(s)" >&2
    run_job "$workers" "$workers" "$work/serving" 900 \
        --submission "$work/spark-$workers.csv" --partitions $((2 * workers))
    secs=$job_s
    if cmp -s "$work/spark-$workers.csv" "$work/submit.csv"; then same="identical"; else same="**differs**"; fi
    rate=$(calc "round($customers / $secs)")
    sub_rate=$(calc "round($customers / $submit_s)")
    rows+="| $workers | $customers | $secs | $rate | $sub_rate | $(calc "round($rate / $sub_rate, 2)") | $same |"$'\n'
    [ "$same" = identical ] || { echo "spark_local: the job's CSV differs from recforge submit's" >&2; tail -20 "$work/job-$workers.log" >&2; }
done

# Throughput once start-up is amortised: the same customers ten times over
# (ids suffixed), scored by the job; no submission to compare with.
"$venv/bin/python" - "$work/serving" "$work/serving-x10" <<'PY'
import os, sys
import pyarrow as pa, pyarrow.parquet as pq
src, dst = sys.argv[1:]
os.makedirs(dst, exist_ok=True)
for name in ["customers.parquet", "purchases.parquet"]:
    t = pq.read_table(os.path.join(src, name))
    parts = []
    for r in range(10):
        ids = pa.array([f"{c}-{r}" for c in t["customer_id"].to_pylist()])
        parts.append(t.set_column(t.schema.get_field_index("customer_id"), "customer_id", ids))
    pq.write_table(pa.concat_tables(parts), os.path.join(dst, name))
PY
scale=""
for workers in 2 1; do
    echo "spark_local: 10x the customers on $workers worker(s)" >&2
    run_job "$workers" "x10-$workers" "$work/serving-x10" 1200 --partitions $((4 * workers))
    secs=$job_s
    rate=$(calc "round($((10 * customers)) / $secs)")
    scale+="| $workers | $((10 * customers)) | $secs | $rate | $(calc "round($rate / $(calc "round($customers / $submit_s)"), 2)") |"$'\n'
done

cat >"$out_md" <<EOF
# The Spark job on a local standalone cluster

\`benches/spark_local.sh\`, $(date -u +%Y-%m-%d), on this machine's $(nproc) cores: pyspark $("$venv/bin/python" -c 'import pyspark; print(pyspark.__version__)'), $(java -version 2>&1 | head -1);
a master and 1 or 2 workers on 127.0.0.1 (1 core, 1 GiB each). Data: the 30k synthetic set
(\`datasets/synth-30k.toml\`), every customer, served by a ranking bundle with small models, histories from
\`recforge serving-data --format parquet\`. Job time: reading, joining, repartitioning by customer id,
scoring in \`mapInArrow\` and counting (the writes after it are not timed); JVM and session start-up not included.
\`recforge submit\` on the same bundle and data, both cores: ${submit_s} s (loading included).

| workers | customers | job s | customers/s | submit customers/s | job / submit | Kaggle CSV against submit's |
|---:|---:|---:|---:|---:|---:|---|
${rows}
The same customers ten times over (start-up and scheduling amortised; no CSV to compare):

| workers | customers | job s | customers/s | job / submit |
|---:|---:|---:|---:|---:|
${scale}
EOF
cat "$out_md"
