"""One exception tree for the whole project.

Every failure that can reach a client is a :class:`SpeculateError`.  Each carries a
stable ``code`` (what a client switches on), a ``source`` (which side failed), a human
message, and the HTTP status it answers with when it ends a request before any stream
(with ``Retry-After`` where waiting helps, and the request field at fault as ``param``).
Inside a stream the session turns them into wire ``error`` events
(:meth:`speculate.core.session.Session.fail_cloud` and friends); before one, the server's
exception handlers (:mod:`speculate.server.errors`) turn them into responses. Nothing
else formats errors.

    SpeculateError                     500 internal_error
    ├── ConfigError                        config_error
    ├── ModelError (edge)                  model_error
    │   ├── ModelNotFound                  model_not_found
    │   └── ModelCorrupt                   model_corrupt
    ├── EdgeError (edge)                   edge_failed
    ├── CloudError (cloud)                 cloud_error
    │   ├── CloudUnreachable, CloudTimeout (first token, stalled, total), CloudDropped,
    │   └── CloudHTTPError, CloudProtocolError, StandInError
    ├── UpstreamFailed                 502 the request ended without an answer
    ├── BadRequest (client)            400 bad_request
    │   ├── ContextTooLong             400 context_too_long      (param: messages)
    │   ├── Unauthorized               401 invalid_api_key
    │   ├── Forbidden                  403 forbidden             (Host or Origin refused)
    │   ├── NotFound                   404 unknown_request
    │   │   └── UnknownModel           404 model_not_found
    │   ├── Conflict                   409 not_running
    │   ├── ModelLoadFailed            422 model_load_failed     (the old model serves on)
    │   └── RateLimited                429 rate_limited          (Retry-After)
    └── Unavailable                    503 overloaded            (Retry-After)
        └── ShuttingDown               503 shutting_down         (Retry-After)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar, Literal

Source = Literal["edge", "cloud", "server", "client"]


def describe(exc: BaseException) -> str:
    """An exception as a person reads it: its message, never its repr (a client must
    not see ``ConnectError('...')`` or a class path)."""
    text = str(exc).strip()
    if isinstance(exc, KeyError) and exc.args:
        return f"missing field {exc.args[0]}"
    return text or "no reason given"


class SpeculateError(Exception):
    """Root of every error this package raises on purpose."""

    code: str = "internal_error"
    source: ClassVar[Source] = "server"
    http_status: ClassVar[int] = 500

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param  # the request field at fault, if one is
        self.retry_after_s = retry_after_s  # when to try again, if waiting helps

    @property
    def transient(self) -> bool:
        """The cloud is away or overloaded, not wrong: worth a retry later (the circuit
        breaker counts these and the offline queue keeps the refinement)."""
        return False


class ConfigError(SpeculateError):
    code = "config_error"


class ModelError(SpeculateError):
    """The model file is missing, corrupt or cannot be loaded."""

    code = "model_error"
    source = "edge"


class ModelNotFound(ModelError):
    code = "model_not_found"


class ModelCorrupt(ModelError):
    code = "model_corrupt"


class EdgeError(SpeculateError):
    """The on-device model failed while generating."""

    code = "edge_failed"
    source = "edge"


class CloudError(SpeculateError):
    """Anything that went wrong talking to the cloud model."""

    code = "cloud_error"
    source = "cloud"

    @property
    def transient(self) -> bool:
        return isinstance(self, CloudUnreachable | CloudTimeout | CloudDropped)


class CloudUnreachable(CloudError):
    """No connection could be made (refused, DNS, connect timeout)."""

    code = "cloud_unreachable"


class CloudTimeout(CloudError):
    """The cloud connected but did not deliver in time."""

    code = "cloud_timeout"


class CloudFirstTokenTimeout(CloudTimeout):
    code = "cloud_first_token_timeout"


class CloudStalled(CloudTimeout):
    code = "cloud_stalled"


class CloudTotalTimeout(CloudTimeout):
    code = "cloud_total_timeout"


class CloudDropped(CloudError):
    """The connection broke in the middle of the answer."""

    code = "cloud_dropped"


class CloudHTTPError(CloudError):
    """The cloud answered with an HTTP error status."""

    code = "cloud_http_error"

    def __init__(self, message: str, status: int, retry_after_s: float | None = None) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        self.status = status  # the cloud's, not ours

    @property
    def transient(self) -> bool:
        return self.status == 429 or self.status >= 500


class CloudProtocolError(CloudError):
    """The cloud's answer did not follow the OpenAI streaming format."""

    code = "cloud_protocol_error"


class StandInError(CloudError):
    """The local cloud stand-in server could not be started."""

    code = "cloud_standin_failed"


class BadRequest(SpeculateError):
    """The client sent something we cannot serve (HTTP 4xx / WebSocket close)."""

    code = "bad_request"
    source = "client"
    http_status = 400


class ContextTooLong(BadRequest):
    """Even the last message alone does not fit a model's context window."""

    code = "context_too_long"


class Unauthorized(BadRequest):
    code = "invalid_api_key"
    http_status = 401


class Forbidden(BadRequest):
    code = "forbidden"
    http_status = 403


class NotFound(BadRequest):
    code = "unknown_request"
    http_status = 404


class UnknownModel(NotFound):
    code = "model_not_found"


class Conflict(BadRequest):
    code = "not_running"
    http_status = 409


class ModelLoadFailed(BadRequest):
    code = "model_load_failed"
    http_status = 422


class RateLimited(BadRequest):
    code = "rate_limited"
    http_status = 429


class Unavailable(SpeculateError):
    """The server cannot take the request now; it may later (``retry_after_s``)."""

    code = "overloaded"
    http_status = 503


class ShuttingDown(Unavailable):
    code = "shutting_down"


class UpstreamFailed(SpeculateError):
    """A request that must answer in one piece ended without an answer."""

    code = "no_answer"
    http_status = 502


@contextmanager
def unwrapped() -> Iterator[None]:
    """Give back the one exception a task group wrapped as itself: a caller (and
    Starlette's exception handlers) expects what was raised, not a group of one.  A
    group of several is raised as it is."""
    try:
        yield
    except BaseExceptionGroup as group:
        failed: BaseException = group
        while isinstance(failed, BaseExceptionGroup) and len(failed.exceptions) == 1:
            failed = failed.exceptions[0]
        if failed is group:
            raise
        raise failed from None


def speculate_error_in(exc: BaseException) -> SpeculateError | None:
    """The first :class:`SpeculateError` in ``exc`` or the exception groups around it
    (task groups wrap what their tasks raise), else None."""
    if isinstance(exc, SpeculateError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = speculate_error_in(inner)
            if found is not None:
                return found
    return None
