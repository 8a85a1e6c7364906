"""What a token costs on each side, from the operator's cost configuration.

Edge: the device's price spread over its lifetime plus its power, divided by the
tokens per second it sustains.  Cloud: either a per-token price (a hosted API) or a
GPU-hour price divided by the GPU's measured throughput, with prompt tokens priced
as a fraction of generated ones (prefill is cheaper than decode).  The defaults
follow the guide this product grew from: a $1,000 Jetson-class device over three
years, and a 70B model on an H100 at $2.49/hour, about $0.0005 per answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only its fields are read: loading pydantic-settings would bring asyncio
    from speculate.settings import CostSettings

SECONDS_PER_YEAR = 365.25 * 24 * 3600
PER_MILLION = 1e6


@dataclass(frozen=True, slots=True)
class Prices:
    """USD per million tokens."""

    edge: float
    cloud_in: float
    cloud_out: float


def prices(costs: CostSettings) -> Prices:
    hardware_per_s = costs.edge_hardware_usd / (costs.edge_lifetime_years * SECONDS_PER_YEAR)
    power_per_s = costs.edge_power_watts / 1000 * costs.electricity_usd_per_kwh / 3600
    edge = (hardware_per_s + power_per_s) / costs.edge_tokens_per_second * PER_MILLION
    if costs.cloud_usd_per_mtok_out is not None:
        cloud_out = costs.cloud_usd_per_mtok_out
    else:
        cloud_out = (
            costs.cloud_usd_per_gpu_hour / 3600 / costs.cloud_tokens_per_second * PER_MILLION
        )
    if costs.cloud_usd_per_mtok_in is not None:
        cloud_in = costs.cloud_usd_per_mtok_in
    else:
        cloud_in = cloud_out * costs.cloud_prefill_ratio
    return Prices(edge=edge, cloud_in=cloud_in, cloud_out=cloud_out)


def edge_energy_per_mtok(costs: CostSettings) -> float:
    """The edge's running cost alone (power), USD per million tokens."""
    power_per_s = costs.edge_power_watts / 1000 * costs.electricity_usd_per_kwh / 3600
    return power_per_s / costs.edge_tokens_per_second * PER_MILLION


def edge_hardware_per_month(costs: CostSettings) -> float:
    """A device's hardware price spread over its lifetime, per month (for fleet plans)."""
    return costs.edge_hardware_usd / (costs.edge_lifetime_years * 12)
