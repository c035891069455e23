#!/usr/bin/env bash
# The whole loop on a freshly generated workspace; run by `make demo`.
set -euo pipefail
BERYL=${BERYL:-beryl}
DIR=${DEMO_DIR:-demo-workspace}
rm -rf "$DIR"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "beryl init $DIR"
$BERYL init "$DIR" --rows 3000 --files 3 --seed 7
export BERYL_CONFIG="$DIR/config.json"

step "beryl ingest"
$BERYL ingest
step "beryl train"
$BERYL train
step "beryl score"
$BERYL score
step "beryl deploy"
$BERYL deploy
step "beryl diagnose"
$BERYL diagnose
step "beryl report"
$BERYL report

step "Where everything is"
echo "  dataset            $DIR/ingesteddata/finaldata.csv (+ batches/, dataset.json)"
echo "  ingested files     $DIR/ingesteddata/ingestedfiles.txt"
echo "  trained model      $DIR/models/trainedmodel.pkl (versions in $DIR/models/versions/)"
echo "  latest score       $DIR/models/latestscore.txt"
echo "  production         $DIR/production_deployment/"
echo "  reports            $DIR/models/confusionmatrix.png, classificationreport.png, report.html"
echo "  history            $DIR/beryl.sqlite (beryl history)"
