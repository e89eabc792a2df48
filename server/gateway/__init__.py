"""The REST gateway: the seed's v1 and v2 REST APIs, translated to calls on the `tandem.v1`
gRPC API (`create_gateway`), and a uvicorn runner for it (`GatewayServer`). It keeps no
state of its own."""

from server.gateway.app import create_gateway, drain
from server.gateway.backend import Timeouts
from server.gateway.runner import GatewayServer

__all__ = ["GatewayServer", "Timeouts", "create_gateway", "drain"]
