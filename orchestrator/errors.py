"""The domain's own errors. The API maps each kind to one status code at its edge.

    DomainError
     ├── InvalidInput    400  the request is malformed or names something impossible
     ├── AuthFailed      401  login refused
     ├── Forbidden       403  not allowed for this node's mode
     ├── NotFound        404  the resource does not exist
     ├── Conflict        409  the resource is in a state that forbids the operation
     ├── OperationFailed 500  the operation was valid but failed (pull, build, I/O)
     └── Unavailable     503  a subsystem is not running
"""

from __future__ import annotations


class DomainError(Exception):
    status_code = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(DomainError):
    status_code = 400


class AuthFailed(DomainError):
    status_code = 401


class Forbidden(DomainError):
    status_code = 403


class NotFound(DomainError):
    status_code = 404


class Conflict(DomainError):
    status_code = 409


class OperationFailed(DomainError):
    status_code = 500


class Unavailable(DomainError):
    status_code = 503
