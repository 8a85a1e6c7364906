"""CloudHealth: what counts as the cloud being away, and the prober closing the circuit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anyio

from speculate.engine.cloud_health import CloudHealth
from speculate.errors import CloudHTTPError, CloudStalled, CloudUnreachable
from speculate.settings import CloudSettings


@dataclass
class ProbedCloud:
    """Only ``probe`` matters here; answers come from a list, the last one repeats."""

    answers: list[dict[str, Any]]
    model_name: str = "m"
    probes: int = 0

    async def probe(self) -> dict[str, Any]:
        self.probes += 1
        return self.answers[min(self.probes, len(self.answers)) - 1]

    def stream(self, *args: Any) -> Any:
        raise NotImplementedError

    async def aclose(self) -> None:
        pass


SETTINGS = CloudSettings(
    circuit_failures=2, circuit_probe_base_s=0.05, circuit_probe_cap_s=0.2, probe_interval_s=30
)


async def test_only_transient_request_failures_open_the_circuit() -> None:
    health = CloudHealth(ProbedCloud([{"state": "up", "rtt_ms": 1.0}]), SETTINGS)
    health.failed(CloudHTTPError("bad request", 400))  # the cloud is there: not counted
    health.failed(CloudHTTPError("bad request", 400))
    assert health.view == "up"
    health.failed(CloudStalled("quiet"))
    health.failed(CloudHTTPError("overloaded", 503))
    assert health.view == "open"


async def test_a_slow_probe_is_not_an_outage_but_a_refused_one_is() -> None:
    cloud = ProbedCloud(
        [{"state": "down", "error": "ReadTimeout"}] * 3
        + [{"state": "down", "error": "ConnectError"}] * 2
    )
    health = CloudHealth(cloud, SETTINGS)
    for _ in range(3):
        await health.probe()
    assert health.view == "up"
    for _ in range(2):
        await health.probe()
    assert health.view == "open"
    assert health.snapshot()["last_error"] == "probe: ConnectError"


async def test_the_prober_closes_the_circuit_once_the_cloud_answers() -> None:
    cloud = ProbedCloud(
        [{"state": "down", "error": "ConnectError"}] * 2 + [{"state": "up", "rtt_ms": 2.5}]
    )
    health = CloudHealth(cloud, SETTINGS)
    health.failed(CloudUnreachable("refused"))
    health.failed(CloudUnreachable("refused"))
    assert health.view == "open"
    async with anyio.create_task_group() as group:
        group.start_soon(health.run)
        assert await health.wait_until_up(5.0)
        group.cancel_scope.cancel()
    assert cloud.probes == 3  # two failed half-open probes, then the one that closed it
    assert health.snapshot()["circuit"] == "closed"
    assert health.rtt_ms == 2.5
