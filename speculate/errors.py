"""One exception tree for the whole project.

Every failure that can reach a client is a :class:`SpeculateError`.  Each carries a
stable ``code`` (what a client switches on), a ``source`` (which side failed) and a
human message.  The orchestrator turns them into wire ``error`` events in one place
(:meth:`speculate.core.session.Session.fail_cloud` and friends); nothing else formats
errors for the wire.
"""

from __future__ import annotations

from typing import ClassVar, Literal

Source = Literal["edge", "cloud", "server", "client"]


class SpeculateError(Exception):
    """Root of every error this package raises on purpose."""

    code: ClassVar[str] = "internal_error"
    source: ClassVar[Source] = "server"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

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
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s

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
