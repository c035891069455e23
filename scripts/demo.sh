#!/usr/bin/env bash
# The whole story on a freshly generated workspace; run by `make demo`.
set -euo pipefail
BERYL=${BERYL:-beryl}
DIR=${DEMO_DIR:-demo-workspace}
rm -rf "$DIR"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "beryl init $DIR: a workspace with generated customer data"
$BERYL init "$DIR" --rows 3000 --files 3 --seed 7
export BERYL_CONFIG="$DIR/config.json"

step "beryl run: the first pass ingests, trains, scores and deploys the first model"
$BERYL run --no-apicalls

step "beryl run again: no new data, nothing to do"
$BERYL run --no-apicalls

step "A new batch arrives (activity 50% higher: data drift)"
$BERYL add-batch --rows 1500 --seed 8 --shift 0.5 --name new-customers.csv

step "beryl run: drift check, a candidate, the comparison and the decision"
$BERYL run --no-apicalls || true

step "beryl serve: the API on a free port"
PORT=$(${PYTHON:-python3} -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
$BERYL serve --port "$PORT" > "$DIR/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
PY=${PYTHON:-python3}
$PY - "$PORT" <<'PYEOF'
import sys, time, httpx
url = f"http://127.0.0.1:{sys.argv[1]}"
for _ in range(200):
    try:
        if httpx.get(f"{url}/health", timeout=1).status_code == 200:
            break
    except httpx.HTTPError:
        time.sleep(0.1)
print(f"serving on {url} (docs: {url}/docs)")
records = [
    {"corporation": "abcd", "lastmonth_activity": 5, "lastyear_activity": 300, "number_of_employees": 12},
    {"corporation": "wxyz", "lastmonth_activity": 400, "lastyear_activity": 4000, "number_of_employees": 40},
]
print("POST /prediction ->", httpx.post(f"{url}/prediction", json={"records": records}).json())
PYEOF

step "beryl apicalls: every endpoint's answer into apireturns.txt"
$BERYL apicalls --url "http://127.0.0.1:$PORT"

step "Stop the server"
kill $SERVER && wait $SERVER 2>/dev/null || true
trap - EXIT
echo "stopped"

step "beryl diagnose and beryl report"
$BERYL diagnose --no-outdated
$BERYL report
$BERYL models list

step "Where everything is"
echo "  dataset            $DIR/ingesteddata/finaldata.csv (+ batches/, dataset.json)"
echo "  ingested files     $DIR/ingesteddata/ingestedfiles.txt"
echo "  trained model      $DIR/models/trainedmodel.pkl (versions in $DIR/models/versions/)"
echo "  latest score       $DIR/models/latestscore.txt"
echo "  production         $DIR/production_deployment/"
echo "  reports            $DIR/models/confusionmatrix.png, classificationreport.png, report.html"
echo "  API answers        $DIR/models/apireturns.txt"
echo "  history            $DIR/beryl.sqlite (beryl history)"
echo "  run it every 10 minutes: beryl schedule   (or: beryl cron --install)"
