#!/bin/bash
# Runs `sa2crq eval` once per line of RUNS (name, then eval flags) in parallel on a GPU machine,
# from what prepare.sh packed, and writes their logs and results to $OUT/runs.tgz.
#   device run, carry [.whl, .devdata]:  RUNS=benchmarks/gpu_eval/runs.txt bash benchmarks/gpu_eval/run.sh
# BUDGET: seconds from the start after which unfinished runs are stopped (their logs still hold
# each finished epoch's validation Recall@10).
set -u
cd "$(dirname "$0")/../.."
T0=$(date +%s)
BUDGET=${BUDGET:-540}
OUTDIR=${OUT:-/tmp/out}; mkdir -p "$OUTDIR" /tmp/data /tmp/logs /tmp/runs
export PYTHONPATH=$PWD:/tmp/site
python3 -c "import faiss, bm25s, pydantic_settings, redis, fastapi" 2>/dev/null ||
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 SA2CRQ_CACHE_DIR=/tmp/cache
export OMP_NUM_THREADS=${THREADS:-2}
tar xzf .devdata/data.tgz -C /tmp/data
mkdir -p /tmp/cache && gunzip -c .devdata/embeddings.sqlite.gz > /tmp/cache/embeddings.sqlite
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
LEFT=$(( BUDGET - ($(date +%s) - T0) ))
while read -r name args; do
  [ -z "$name" ] && continue
  ( timeout "$LEFT" python3 -c "import sys; from sa2crq.cli import main; sys.argv[0] = 'sa2crq'; main()" \
      eval --data /tmp/data --methods sa2crq --out "/tmp/runs/$name" $args > "/tmp/logs/$name.log" 2>&1
    echo "$name rc=$? after $(( $(date +%s) - T0 )) s" ) &
done < "${RUNS:?RUNS: a file of lines: name eval-flags}"
wait
for f in /tmp/logs/*.log; do
  tr '\r' '\n' < "$f" | grep -a -v "WARNING\|it/s\]\|step/s\|epoch/s\|case/s\|item/s\|^ *$" > "${f%.log}.txt"
  echo "== $(basename "$f" .log)"; grep -a "select epoch [0-9]*/[0-9]*: loss\|Error" "${f%.log}.txt" | sort -u
done
cd /tmp && tar czf "$OUTDIR/runs.tgz" logs/*.txt $(ls runs/*/methods/*/result.json runs/*/baselines/*/result.json 2>/dev/null)
echo "total $(( $(date +%s) - T0 )) s"
