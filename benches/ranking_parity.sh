#!/usr/bin/env bash
# What is evaluated is what is served, at the synthetic set's real size:
# on `experiments/hm_pipeline.toml` (30k customers), the first N test
# customers (default 1,000) get the same 12 articles, in the same order,
# from the pipeline's own evaluation (served-hm_pipeline.csv), from
# `recforge submit` on the test period's ranking bundle, and from a
# `recforge-serve` tenant on that bundle fed `recforge serving-data`.
# Too slow for CI (the pipeline takes about 20 minutes on 2 cores; its
# steps are reused when it ran before); the tests check the same on a
# 2,000-customer set. Writes results/ranking_parity.md.
#
#   cargo build --workspace && benches/ranking_parity.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000}
bin=${CARGO_TARGET_DIR:-target}/debug
run=runs/hm_pipeline
bundle=$run/ranking-hm_pipeline
out=benches/results/ranking_parity.md
tmp=$(mktemp -d)
server=""
cleanup() {
    if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT

"$bin/recforge" run experiments/hm_pipeline.toml > "$tmp/run.log"
"$bin/recforge" submit --bundle "$bundle" --data "$run/cache" --out "$tmp/submission.csv"
day=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["day"])' "$bundle/ranking.json")
"$bin/recforge" serving-data --data "$run/cache" --out "$tmp/serving" --day "$day" --history-len 1000000
today=$(python3 -c 'import datetime,sys; print(datetime.date(1970,1,1)+datetime.timedelta(days=int(sys.argv[1])))' "$day")
mkdir -p "$tmp/models"
ln -s "$PWD/$bundle" "$tmp/models/shop"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$tmp/serve.toml" <<TOML
models_dir = "models"
admin_token = "parity-check-token-not-secret"
port = $port
[tenants.shop]
bundle = "shop"
customers = "serving/customers.jsonl"
today = "$today"
TOML
"$bin/recforge-serve" serve --config "$tmp/serve.toml" 2> "$tmp/serve.log" &
server=$!
python3 - "$run/served-hm_pipeline.csv" "$tmp/submission.csv" "$port" "$n" "$out" "$today" <<'PY'
import json, sys, time, urllib.request, datetime, subprocess
served_path, sub_path, port, n, out, today = sys.argv[1:7]
n = int(n)
def lists(path):
    with open(path) as f:
        next(f)
        return dict((c, p.split()) for c, p in (l.rstrip("\n").split(",", 1) for l in f))
served = lists(served_path)
sub = lists(sub_path)
customers = list(served)[:n]
for _ in range(600):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1)
        break
    except Exception:
        time.sleep(0.5)
same_submit = same_http = 0
first_diff = []
t = time.time()
for c in customers:
    body = json.dumps({"customer_id": c, "k": 12}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/shop/recommend", body,
                                 {"content-type": "application/json"})
    got = [x["article_id"] for x in json.load(urllib.request.urlopen(req, timeout=30))["items"]]
    same_submit += sub[c] == served[c]
    same_http += got == served[c]
    if (sub[c] != served[c] or got != served[c]) and len(first_diff) < 3:
        first_diff.append((c, served[c], sub[c], got))
http_s = time.time() - t
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
verdict = ("**Identical: all %d customers get the same list from all three.**" % n
           if same_submit == same_http == n else
           "**Not identical** (first differences below).")
with open(out + ".tmp", "w") as f:
    f.write(f"""# Ranking bundle parity at 30k customers

`benches/ranking_parity.sh {n}` ({datetime.date.today()}, commit {commit}): the pipeline
`experiments/hm_pipeline.toml` (synthetic H&M, 30,000 customers), its test period's ranking
bundle served as of {today}. For the first {n} of its {len(served)} test customers (in the
evaluation's order), the evaluation's own list (`served-hm_pipeline.csv`) against

| served by | same list (12 articles, same order) |
| --- | ---: |
| `recforge submit --bundle` | {same_submit} / {n} |
| `recforge-serve` tenant (`serving-data` histories, {http_s:.1f} s for the requests) | {same_http} / {n} |

{verdict}
""")
    for c, a, b, g in first_diff:
        f.write(f"\n- `{c}`: evaluation {a}, submit {b}, HTTP {g}\n")
import os
os.replace(out + ".tmp", out)
print(open(out).read())
sys.exit(0 if same_submit == same_http == n else 1)
PY
