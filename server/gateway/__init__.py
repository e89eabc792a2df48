"""The REST gateway: the seed's v1 and v2 REST APIs, translated to calls on the `tandem.v1`
gRPC API (`create_gateway`). It keeps no state of its own."""

from server.gateway.app import create_gateway
from server.gateway.backend import Timeouts

__all__ = ["Timeouts", "create_gateway"]
