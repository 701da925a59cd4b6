#!/bin/bash
# Packs what `run.sh` needs on a GPU machine that has PyTorch and transformers but no network and
# a 64 MiB limit on what travels: wheels of this project's other dependencies (Python 3.12), the
# data folder, and the MiniLM embeddings of its texts (the MiniLM wheel alone is over the limit).
#   bash benchmarks/gpu_eval/prepare.sh DATA_DIR     (from the repository root, in the dev venv)
# Writes .whl/ and .devdata/ (both ignored through .git/info/exclude).
set -euo pipefail
data=${1:?usage: prepare.sh DATA_DIR}
for d in .whl .devdata; do grep -qx "/$d/" .git/info/exclude 2>/dev/null || echo "/$d/" >> .git/info/exclude; done
mkdir -p .whl .devdata
# What the device image lacks (its package list: the device tool's KINDS.md); versions as installed here.
for p in faiss-cpu pydantic pydantic_core pydantic-settings python-dotenv annotated-types typing-inspection \
         redis fastapi starlette annotated-doc bm25s uvicorn; do
  pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "$p==$(pip show "$p" | sed -n 's/^Version: //p')"
done
tar czf .devdata/data.tgz -C "$data" .
# One short eval run embeds every text a run embeds (catalog, queries, up to 1,000 test cases, as
# runs.txt decodes) into a fresh cache.
cache=$(mktemp -d)
SA2CRQ_CACHE_DIR=$cache sa2crq eval --data "$data" --methods sa2crq --baselines '' --max-steps 2 --val-cases 0 --max-cases 1000 \
  --decoder-epochs 1 --out "$cache/eval" > "$cache/log" 2>&1 || { cat "$cache/log"; exit 1; }
# The cache file itself travels (gzip: ~25 MB for games), so its format stays sidcore.embed's alone.
gzip -c "$cache/embeddings.sqlite" > .devdata/embeddings.sqlite.gz
du -sh .whl .devdata
