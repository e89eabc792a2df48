#!/usr/bin/env bash
# Generates the Python (_pb2, .pyi, _pb2_grpc) and Go stubs from proto/ into $1/python
# and $1/go (`make gen` writes straight into clients/; `make check-gen` into a scratch dir):
# tandem.v1 (Python `tandem.v1`, Go `tandemv1`) and the Open Inference Protocol's
# `inference` package (Python `tandem.inference`, Go `clients/go/inference`).
set -euo pipefail
out=${1:?usage: generate.sh OUT_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
mkdir -p "$out/python" "$out/go"
go_module=github.com/tandem-ml/tandem/clients/go
.venv/bin/python -m grpc_tools.protoc -I proto \
  --python_out="$out/python" --pyi_out="$out/python" --grpc_python_out="$out/python" \
  --plugin=protoc-gen-go="$(command -v protoc-gen-go)" \
  --plugin=protoc-gen-go-grpc="$(command -v protoc-gen-go-grpc)" \
  --go_out="$out/go" --go_opt=module="$go_module" \
  --go-grpc_out="$out/go" --go-grpc_opt=module="$go_module" \
  proto/tandem/v1/*.proto proto/tandem/inference/*.proto
