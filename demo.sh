#!/usr/bin/env bash
# The README's first command: set up, train a small SST-2 classifier for about
# two minutes, export it, serve it with our TF-Serving-compatible server, and
# classify a few sentences over gRPC and REST.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
PY=.venv/bin/python
export TF_CPP_MIN_LOG_LEVEL=2
GRPC_PORT="${DEMO_GRPC_PORT:-8500}"
REST_PORT="${DEMO_REST_PORT:-8501}"

echo "== 1/3 train (trainers/configs/sst2_demo.flags) and export to models/sst2"
$PY -m trainers.train --flagfile=trainers/configs/sst2_demo.flags \
    --model_dir=runs/sst2_demo --export_dir=models/sst2 2>&1 \
  | grep -E "step [0-9]+/|eval step|Done|Exported|Error" || true
test -n "$(ls models/sst2 2>/dev/null)" || { echo "export failed"; exit 1; }

echo "== 2/3 serve models/sst2 on gRPC :$GRPC_PORT and REST :$REST_PORT"
$PY -m serving.server --port="$GRPC_PORT" --rest_api_port="$REST_PORT" \
    --model_name=sst2 --model_base_path="$PWD/models/sst2" \
    > runs/sst2_demo_server.log 2>&1 &
SERVER_PID=$!
trap 'kill $SERVER_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  if $PY - "$REST_PORT" <<'PYEOF' 2>/dev/null; then break; fi
import json, sys, urllib.request
status = json.load(urllib.request.urlopen(
    f"http://127.0.0.1:{sys.argv[1]}/v1/models/sst2", timeout=2))
sys.exit(0 if status["model_version_status"][0]["state"] == "AVAILABLE" else 1)
PYEOF
  sleep 1
done

echo "== 3/3 classify over gRPC (python -m serving.client) and REST"
$PY -m serving.client --server="127.0.0.1:$GRPC_PORT" --model=sst2 \
    "a gripping, funny and deeply moving film" \
    "dull, lifeless and far too long" \
    "the cast is wonderful but the script lets them down"
$PY - "$REST_PORT" <<'PYEOF'
import json, sys, urllib.request
body = json.dumps({"instances": ["an instant classic", "a waste of two hours"]})
request = urllib.request.Request(
    f"http://127.0.0.1:{sys.argv[1]}/v1/models/sst2:predict",
    data=body.encode(), headers={"Content-Type": "application/json"})
print("REST :predict ->", json.dumps(json.load(urllib.request.urlopen(request)),
                                      indent=1))
PYEOF
