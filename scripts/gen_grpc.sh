#!/usr/bin/env bash
# Regenerate server/protocols/v2/proto/grpc_service.binpb (the descriptor set the gRPC server loads into
# its own descriptor pool) from server/protocols/v2/proto/grpc_service.proto. Needs grpcio-tools (dev).
set -euo pipefail
cd "$(dirname "$0")/../server/protocols/v2/proto"
"${PYTHON:-../../../../.venv/bin/python}" -m grpc_tools.protoc -I. \
  --descriptor_set_out=grpc_service.binpb grpc_service.proto
echo "wrote server/protocols/v2/proto/grpc_service.binpb"
