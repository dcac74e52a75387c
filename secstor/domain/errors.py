"""Errors the domain and services raise; the API maps each to CloudStack's codes.

| error              | HTTP / errorcode | cserrorcode |
|--------------------|------------------|-------------|
| InvalidParameter   | 431              | 4350        |
| PermissionDenied   | 531              | 4365        |
| InsufficientCapacity | 533            | 4370        |
| ResourceUnavailable| 534              | 4380        |
| ResourceInUse      | 536              | 4350        |
| OperationFailed    | 530              | 4250        |
"""

from __future__ import annotations


class SecstorError(Exception):
    errorcode = 530
    cserrorcode = 4250

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidParameter(SecstorError):
    """Bad or missing input (CloudStack's InvalidParameterValueException)."""

    errorcode = 431
    cserrorcode = 4350

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class NotFound(InvalidParameter):
    """An id that names nothing the caller may see: CloudStack answers these with 431."""


class PermissionDenied(SecstorError):
    errorcode = 531
    cserrorcode = 4365


class InsufficientCapacity(SecstorError):
    errorcode = 533
    cserrorcode = 4370


class ResourceUnavailable(SecstorError):
    errorcode = 534
    cserrorcode = 4380


class ResourceInUse(SecstorError):
    errorcode = 536
    cserrorcode = 4350


class OperationFailed(SecstorError):
    """CloudStack's CloudRuntimeException: 530."""


class IllegalTransition(OperationFailed):
    """A state change the state machine does not allow."""
