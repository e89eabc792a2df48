"""Tandem's Python package: the generated `tandem.v1` stubs, the client and the CLI.

from tandem import Client
"""

from tandem.client import DEFAULT_ADDRESS, Client
from tandem.errors import (
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    ServerError,
    TandemError,
    Unauthenticated,
    Unavailable,
)

__all__ = [
    "DEFAULT_ADDRESS",
    "Cancelled",
    "Client",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "ServerError",
    "TandemError",
    "Unauthenticated",
    "Unavailable",
]
