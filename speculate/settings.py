"""Configuration: YAML files in ``configs/``, every key overridable from the environment.

``SPECULATE_<SECTION>__<KEY>`` overrides ``section.key`` (for example
``SPECULATE_CLOUD__BASE_URL=http://gpu-box:8000/v1``); environment beats file beats
defaults.  Prices default to the guide's per-inference figures for an H100 serving a
70B model and a Jetson-class edge device, expressed per million tokens.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from speculate.assets import configs_dir
from speculate.errors import ConfigError

DEFAULT_CONFIG = configs_dir() / "default.yaml"


class ServerSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    sse_ping_s: float = Field(15.0, gt=0)
    ws_max_message_bytes: int = Field(256 * 1024, gt=0)
    max_prompt_chars: int = Field(32_000, gt=0)
    max_messages: int = Field(2048, gt=0, description="messages in one conversation at most")
    max_tokens_limit: int = Field(4096, gt=0)
    resume_grace_s: float = Field(30.0, ge=0, description="how long an unfollowed request lives")
    admin_keys: list[str] = Field(
        default_factory=list, description="Bearer keys for /admin (empty: admin requests off)"
    )
    api_keys: list[str] = Field(
        default_factory=list, description="Bearer keys for /v1 (empty: no authentication)"
    )
    log_format: str = Field("text", pattern="^(text|json)$")
    max_concurrent_streams: int = Field(256, ge=1)
    max_streams_per_client: int = Field(
        16, ge=0, description="streams one client address may run at once; 0: no cap"
    )
    header_timeout_s: float = Field(
        10.0, gt=0, description="a connection must finish its request headers within this"
    )
    max_connections: int = Field(
        4096, ge=16, description="open connections at most (and never past the fd limit)"
    )
    rate_per_minute: float = Field(600.0, ge=0, description="per client address; 0: no limit")
    rate_burst: int = Field(60, ge=1)
    ws_messages_per_second: float = Field(50.0, gt=0)
    shutdown_grace_s: float = Field(10.0, ge=0, description="time in-flight streams get")
    retain_finished: int = Field(1000, ge=0, description="finished requests kept for resume")
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names served besides IP addresses, localhost, the bound host and "
        "this machine's name (DNS-rebinding defence); '*': any",
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="WebSocket Origins allowed besides the server's own (exact match)",
    )
    cors_origins: list[str] = Field(default_factory=list, description="empty: no CORS")


class EdgeSettings(BaseModel):
    model: str = Field(
        "smollm2-135m",
        description="a name from `speculate models`, a .gguf path, hf:OWNER/REPO/FILE.gguf"
        "[@REVISION]; with base_url: the model name that server serves",
    )
    base_url: str | None = Field(
        None, description="an OpenAI-compatible server on the device (llama-server, Ollama)"
    )
    api_key_env: str = Field("SPECULATE_EDGE_API_KEY", description="base_url's key, if any")
    chat_template_model: str | None = Field(
        None, description="base_url: the GGUF whose template lets verify continue a draft"
    )
    n_threads: int | None = Field(None, ge=1, description="None: half the cores, at least 1")
    n_ctx: int = Field(2048, ge=128, description="the context window (base_url: the server's)")
    n_gpu_layers: int = Field(0, ge=-1, description="layers offloaded to the GPU; -1: all")
    flash_attn: bool = Field(False, description="llama.cpp's flash attention (GPU builds)")
    n_batch: int = Field(512, ge=1, description="prompt tokens evaluated per batch")
    chat_format: str | None = Field(
        None, description="llama-cpp-python chat format; None: the GGUF's own template"
    )
    prompt_cache_mb: int = Field(
        256, ge=0, description="evaluated conversations kept for follow-ups; 0: none"
    )
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    seed: int | None = None
    max_tokens: int = Field(256, ge=1)


class StandInSettings(BaseModel):
    logits_all: bool = Field(True, description="needed to score drafts (verify mode)")
    n_batch: int = Field(
        512, ge=1, description="1: prompts evaluated like generated tokens, bit for bit"
    )
    reuse_prefix: bool = Field(
        True, description="False: each request from an empty KV cache (exactness tests)"
    )
    model: str = "smollm2-135m"
    n_threads: int | None = Field(None, ge=1)
    n_ctx: int = Field(2048, ge=128)
    startup_timeout_s: float = Field(120.0, gt=0)
    restart_base_s: float = Field(1.0, ge=0, description="first restart after a crash")
    restart_cap_s: float = Field(30.0, ge=0, description="restart backoff doubles up to this")
    restart_attempts: int = Field(6, ge=0, description="tries in a row before giving up")


class CloudSettings(BaseModel):
    enabled: bool = Field(True, description="False: an edge-only device, no cloud at all")
    base_url: str | None = Field(None, description="None: start the local stand-in server")
    model: str | None = None
    api_key_env: str = "SPECULATE_CLOUD_API_KEY"
    temperature: float = Field(0.0, ge=0)
    connect_timeout_s: float = Field(3.0, gt=0)
    first_token_timeout_s: float = Field(30.0, gt=0)
    stall_timeout_s: float = Field(15.0, gt=0)
    total_timeout_s: float = Field(180.0, gt=0)
    retries: int = Field(2, ge=0, description="before the first byte only")
    max_chunk_bytes: int = Field(1 << 20, ge=1024, description="a longer SSE line is an error")
    retry_base_s: float = Field(0.2, ge=0)
    retry_cap_s: float = Field(2.0, ge=0)
    circuit_failures: int = Field(3, ge=1, description="consecutive failures that open it")
    circuit_probe_base_s: float = Field(1.0, ge=0, description="first half-open probe backoff")
    circuit_probe_cap_s: float = Field(30.0, ge=0)
    probe_interval_s: float = Field(15.0, gt=0, description="health probe while closed")
    flavor: Literal["auto", "llamacpp", "vllm", "none"] = Field(
        "auto", description="request shape for verify mode; auto: the stand-in or /models says"
    )
    chat_template_model: str | None = Field(
        None, description="llamacpp flavor: the GGUF (path or name) whose chat template to use"
    )
    token_limit_param: Literal["max_tokens", "max_completion_tokens"] = Field(
        "max_tokens", description="hosted reasoning models want max_completion_tokens"
    )
    send_temperature: bool = Field(
        True, description="False: leave temperature out (models that only take their default)"
    )
    extra_headers: dict[str, str] = Field(
        default_factory=dict, description="sent with every cloud request (an org or project id)"
    )
    extra_body: dict[str, Any] = Field(
        default_factory=dict, description="merged into every chat request's JSON body"
    )
    n_ctx: int | None = Field(
        None,
        description="the cloud model's context window, for trimming long chats; None: "
        "unknown (the stand-in's is known), the cloud's own limit applies",
    )
    prewarm: bool = Field(
        True, description="send a conversation ahead while its next turn is typed (costs a prefill)"
    )
    standin: StandInSettings = StandInSettings()


class CostSettings(BaseModel):
    """Inputs of :mod:`speculate.policy.cost`; per-token cloud prices override the GPU-hour ones."""

    edge_hardware_usd: float = Field(1000.0, ge=0)
    edge_lifetime_years: float = Field(3.0, gt=0)
    edge_power_watts: float = Field(25.0, ge=0)
    electricity_usd_per_kwh: float = Field(0.15, ge=0)
    edge_tokens_per_second: float = Field(20.0, gt=0)
    cloud_usd_per_gpu_hour: float = Field(2.49, ge=0)
    cloud_tokens_per_second: float = Field(700.0, gt=0)
    cloud_prefill_ratio: float = Field(0.1, ge=0)
    cloud_usd_per_mtok_in: float | None = Field(None, ge=0)
    cloud_usd_per_mtok_out: float | None = Field(None, ge=0)


class StoreSettings(BaseModel):
    path: str | None = Field(None, description="SQLite file; None: the user's data directory")
    request_log: bool = True
    log_prompts: bool = Field(False, description="keep prompt text in the request log")
    queue: bool = Field(True, description="queue cloud refinements while the cloud is away")
    queue_max: int = Field(1000, ge=0, description="pending refinements kept at most")
    queue_poll_s: float = Field(5.0, gt=0, description="how often a stalled queue retries")
    cache: bool = Field(True, description="answer from cached cloud answers while offline")
    cache_ttl_s: float = Field(7 * 24 * 3600.0, gt=0)
    cache_max: int = Field(10_000, ge=0)
    keep_pairs: bool = Field(
        False, description="keep draft/cloud-answer pairs for distillation (speculate distill)"
    )
    pairs_max_age_days: float = Field(90.0, gt=0)
    pairs_max: int = Field(100_000, ge=1)


class RouterSettings(BaseModel):
    """Mode ``auto``: complexity thresholds (see ``speculate calibrate``) and momentum."""

    edge_max: float = Field(0.35, ge=0, le=1, description="score below: the edge alone")
    cloud_min: float = Field(0.85, ge=0, le=1, description="score from: the cloud alone")
    momentum_turns: int = Field(2, ge=0, description="follow-ups kept with the cloud")
    escalate: bool = Field(True, description="unsure edge drafts move to speculative")
    prefer_verify: bool = Field(False, description="the middle band verifies (if it can)")
    confidence_tokens: int = Field(12, ge=1, description="draft tokens judged before going on")
    max_entropy: float = Field(2.5, gt=0, description="mean entropy (nats) that escalates")


class PrivacySettings(BaseModel):
    policy: Literal["keep_on_device", "redact", "off"] = "keep_on_device"
    patterns: list[str] = Field(default_factory=list, description="extra regular expressions")
    keywords: list[str] = Field(default_factory=list, description="words that are private")

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                message = f"privacy pattern {pattern!r} is not a regular expression: {exc}"
                raise ValueError(message) from None
        return patterns


class StreamSettings(BaseModel):
    coalesce_ms: float = Field(16.0, ge=0)
    coalesce_chars: int = Field(96, ge=1)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SPECULATE_", env_nested_delimiter="__", extra="forbid"
    )

    server: ServerSettings = ServerSettings()
    edge: EdgeSettings = EdgeSettings()
    cloud: CloudSettings = CloudSettings()
    stream: StreamSettings = StreamSettings()
    costs: CostSettings = CostSettings()
    store: StoreSettings = StoreSettings()
    router: RouterSettings = RouterSettings()
    privacy: PrivacySettings = PrivacySettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment wins over the YAML file, which arrives as init arguments.
        return env_settings, init_settings

    @classmethod
    def load(cls, path: Path | str | None = None, **overrides: Any) -> Settings:
        """Read a YAML config (default: configs/default.yaml) plus environment overrides."""
        data: dict[str, Any] = {}
        config = Path(path) if path is not None else DEFAULT_CONFIG
        if path is not None or config.exists():
            try:
                loaded = yaml.safe_load(config.read_text(encoding="utf-8"))
            except FileNotFoundError as exc:
                raise ConfigError(f"config file not found: {config}") from exc
            except yaml.YAMLError as exc:
                raise ConfigError(f"config file {config} is not valid YAML: {exc}") from exc
            if loaded is not None and not isinstance(loaded, dict):
                raise ConfigError(f"config file {config} must hold a mapping of sections")
            data = loaded or {}
        for section, values in overrides.items():
            data[section] = {**data.get(section, {}), **values}
        try:
            return cls(**data)
        except ValidationError as exc:
            raise ConfigError(f"invalid configuration ({config}):\n{exc}") from exc
