"""RPCs of the contract that later work finishes. They answer UNIMPLEMENTED with a
sentence saying so, never a made-up result."""

from __future__ import annotations

from server.errors import Context, unary, unimplemented
from tandem.v1 import (
    inference_service_pb2,
    inference_service_pb2_grpc,
)


class InferenceServicer(inference_service_pb2_grpc.InferenceServiceServicer):
    @unary
    async def Infer(
        self, request: inference_service_pb2.InferRequest, context: Context
    ) -> inference_service_pb2.InferResponse:
        raise unimplemented("batch inference (Infer) is not available in this version yet")

    @unary
    async def Predict(
        self, request: inference_service_pb2.PredictRequest, context: Context
    ) -> inference_service_pb2.PredictResponse:
        raise unimplemented("online prediction (Predict) is not available in this version yet")
