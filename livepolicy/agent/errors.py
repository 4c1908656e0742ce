"""Errors the agent answers with: one exception type carrying an HTTP status and a stable code.

The service layer raises `ApiError`; the HTTP layer turns it into
`{"error": {"code": ..., "message": ...}}`. Codes are part of the API (documented in
docs/agent-api.md) so the apply engine can branch on them without parsing messages.
"""

from __future__ import annotations


class ApiError(Exception):
    """A refusal or failure with the HTTP status and machine-readable code to answer with."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def to_json(self) -> dict[str, object]:
        return {"error": {"code": self.code, "message": self.message}}


def bad_request(message: str, code: str = "bad_request") -> ApiError:
    return ApiError(400, code, message)


def conflict(code: str, message: str) -> ApiError:
    return ApiError(409, code, message)


def not_found(code: str, message: str) -> ApiError:
    return ApiError(404, code, message)
