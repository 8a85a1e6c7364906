"""What the app keeps on ``app.state``, built at start-up and torn down at shutdown."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from speculate.backends import models
from speculate.backends.chat_prompt import ChatPrompt
from speculate.backends.device_edge import DeviceServerEdge
from speculate.backends.llamacpp import LlamaCppEdge, default_threads
from speculate.backends.openai_compat import OpenAICompatCloud
from speculate.backends.scoring import LlamaCppScoring, Scoring, VLLMScoring
from speculate.backends.standin import StandInServer
from speculate.core.trim import Window, byte_bound
from speculate.engine.cloud_health import CloudHealth
from speculate.engine.context import Backends, RunObserver
from speculate.engine.eventlog import RequestRegistry
from speculate.engine.jobs import Jobs
from speculate.engine.orchestrator import Orchestrator
from speculate.engine.refiner import Refiner
from speculate.errors import CloudError, ConfigError, ModelLoadFailed, SpeculateError
from speculate.policy.privacy import PrivacyGuard
from speculate.server.logs import RequestLogger
from speculate.server.metrics import Metrics
from speculate.server.ratelimit import RateLimiter
from speculate.settings import CloudSettings, EdgeSettings, Settings
from speculate.storage.answer_cache import AnswerCache
from speculate.storage.db import default_path
from speculate.storage.pairs import PairStore
from speculate.storage.refinement_queue import RefinementQueue
from speculate.storage.request_log import RequestLog

log = logging.getLogger("speculate.server")


@dataclass(slots=True)
class AppState:
    settings: Settings
    backends: Backends
    orchestrator: Orchestrator
    requests: RequestRegistry
    jobs: Jobs
    metrics: Metrics
    rate_limiter: RateLimiter
    health: CloudHealth
    refiner: Refiner | None = None
    request_log: RequestLog | None = None
    standin: StandInServer | None = None
    pairs: PairStore | None = None
    started_at: float = field(default_factory=time.monotonic)
    edge_spec: str = ""  # the edge model as configured (name, path or hf: reference)
    _swapping: anyio.Lock = field(default_factory=anyio.Lock)

    @classmethod
    def create(
        cls, settings: Settings, backends: Backends, standin: StandInServer | None = None
    ) -> AppState:
        metrics = Metrics()
        metrics.watch_edge_queue(lambda: float(getattr(backends.edge, "waiting", 0)))
        observers: list[RunObserver] = [metrics, RequestLogger()]
        request_log = None
        path = Path(settings.store.path) if settings.store.path else default_path()
        if settings.store.request_log:
            guard = PrivacyGuard(settings.privacy.patterns, settings.privacy.keywords)
            request_log = RequestLog(path, keep_prompts=settings.store.log_prompts, guard=guard)
            observers.append(request_log)
        pairs = None
        if settings.store.keep_pairs:
            pairs = PairStore(
                path,
                guard=PrivacyGuard(settings.privacy.patterns, settings.privacy.keywords),
                policy=settings.privacy.policy,
                max_age_days=settings.store.pairs_max_age_days,
                max_pairs=settings.store.pairs_max,
            )
            observers.append(pairs)
        server = settings.server
        requests = RequestRegistry(keep_finished=server.retain_finished)
        health = CloudHealth(backends.cloud, settings.cloud)
        metrics.watch_circuit(lambda: 0.0 if health.breaker.allows_requests else 1.0)
        refiner = None
        if backends.cloud is not None and (settings.store.queue or settings.store.cache):
            queue = RefinementQueue(path, settings.store.queue_max)
            cache = None
            if settings.store.cache:
                cache = AnswerCache(path, settings.store.cache_ttl_s, settings.store.cache_max)
            refiner = Refiner(settings, queue, cache, backends.cloud, health, requests)
        orchestrator = Orchestrator(settings, backends, observers, health=health, offline=refiner)
        jobs = Jobs(orchestrator, requests, server.resume_grace_s, server.max_concurrent_streams)
        limiter = RateLimiter(server.rate_per_minute, server.rate_burst)
        return cls(
            settings,
            backends,
            orchestrator,
            requests,
            jobs,
            metrics,
            limiter,
            health,
            refiner,
            request_log,
            standin,
            pairs,
            edge_spec=settings.edge.model,
        )

    def close_stores(self) -> None:
        if self.request_log is not None:
            self.request_log.close()
        if self.pairs is not None:
            self.pairs.close()
        if self.refiner is not None:
            self.refiner.close()

    async def swap_edge(self, model: str) -> dict[str, object]:
        """Load ``model`` next to the running edge model, then send new requests to it.
        Requests in flight finish on the model they started on (each run holds its own
        reference; the old model is freed when the last one ends).  A model that fails
        to load changes nothing: :class:`ModelLoadFailed` says why."""
        async with self._swapping:
            old = self.backends.edge
            settings = self.settings.edge.model_copy(update={"model": model})
            try:
                if models.hub_reference(model) is not None:
                    await anyio.to_thread.run_sync(models.pull, model)
                edge = await build_edge(settings)
            except SpeculateError as exc:
                log.warning("edge model %s not loaded: %s", model, exc.message)
                raise ModelLoadFailed(
                    f"{model} could not be loaded ({exc.message}); {old.model_name} serves on",
                    param="model",
                ) from None
            self.backends.edge = edge
            self.backends.edge_window = edge.window()
            self.edge_spec = model
            log.info(
                "edge model %s (sha256 %s) serves new requests; %s finishes those in flight",
                edge.model_name,
                edge.model_sha256,
                old.model_name,
            )
            return {
                "edge_model": edge.model_name,
                "sha256": edge.model_sha256,
                "previous": old.model_name,
            }

    async def aclose(self) -> None:
        self.close_stores()
        if isinstance(self.backends.edge, DeviceServerEdge):
            await self.backends.edge.aclose()
        if self.backends.cloud is not None:
            await self.backends.cloud.aclose()
        if self.standin is not None:
            await self.standin.stop()


async def choose_scoring(
    settings: CloudSettings, cloud: OpenAICompatCloud, standin: StandInServer | None
) -> Scoring | None:
    """How verify mode talks to this cloud, or None (verify then speculates)."""
    flavor = settings.flavor
    if flavor == "auto":
        if standin is not None:
            flavor = "vllm" if standin.logits_all else "none"  # it speaks vLLM's shapes
        elif await cloud.served_by() == "vllm":
            flavor = "vllm"
        else:
            flavor = "llamacpp" if settings.chat_template_model else "none"
    if flavor == "vllm":
        return VLLMScoring()
    if flavor == "llamacpp":
        if standin is not None:
            template_model = standin.model_path
        elif settings.chat_template_model:
            template_model = models.resolve(settings.chat_template_model)
        else:
            raise ConfigError("cloud.flavor llamacpp needs cloud.chat_template_model (the GGUF)")
        prompt = await anyio.to_thread.run_sync(ChatPrompt.of_model, template_model)
        return LlamaCppScoring(prompt)
    log.info("verify mode is not available with this cloud (cloud.flavor: none)")
    return None


async def build_backends(settings: Settings) -> tuple[Backends, StandInServer | None]:
    """Load the edge model and connect (or start) the cloud; fail fast and clearly."""
    cloud_settings = settings.cloud
    standin: StandInServer | None = None
    if cloud_settings.enabled and cloud_settings.base_url is None:
        standin_path = models.resolve(cloud_settings.standin.model)
        standin = StandInServer(
            standin_path,
            alias=cloud_settings.model or f"standin-{cloud_settings.standin.model}",
            n_ctx=cloud_settings.standin.n_ctx,
            n_threads=cloud_settings.standin.n_threads or default_threads(),
            startup_timeout_s=cloud_settings.standin.startup_timeout_s,
            logits_all=cloud_settings.standin.logits_all,
            n_batch=cloud_settings.standin.n_batch,
            reuse_prefix=cloud_settings.standin.reuse_prefix,
            restart_base_s=cloud_settings.standin.restart_base_s,
            restart_cap_s=cloud_settings.standin.restart_cap_s,
            restart_attempts=cloud_settings.standin.restart_attempts,
        )
    edge = await build_edge(settings.edge)
    edge_window = edge.window()
    if not cloud_settings.enabled:
        return Backends(edge=edge, cloud=None, edge_window=edge_window), None
    try:
        if standin is not None:
            log.info("starting the local cloud stand-in (%s)", standin.model_path.name)
            base_url = await standin.start()
            log.info("cloud stand-in ready at %s", base_url)
        else:
            assert cloud_settings.base_url is not None
            base_url = cloud_settings.base_url
        cloud = OpenAICompatCloud(cloud_settings, base_url=base_url, model=cloud_settings.model)
        if standin is not None:
            await cloud.discover_model()
        elif not cloud.model_name:
            # Ask the cloud which model it serves; if it is unreachable now, start anyway:
            # the edge answers, and requests report the cloud error until it is back.
            try:
                await cloud.discover_model()
            except CloudError as exc:
                log.warning("no cloud.model configured and %s", exc.message)
        cloud.scoring = await choose_scoring(cloud_settings, cloud, standin)
        cloud_window = await cloud_window_of(cloud_settings, standin)
    except BaseException:
        if standin is not None:
            with anyio.CancelScope(shield=True):
                await standin.stop()
        raise
    return Backends(edge, cloud, edge_window, cloud_window), standin


async def build_edge(settings: EdgeSettings) -> LlamaCppEdge | DeviceServerEdge:
    """The edge: llama.cpp in this process, or a server already on the device."""
    if settings.base_url is not None:
        client = OpenAICompatCloud(
            CloudSettings(
                base_url=settings.base_url,
                model=settings.model,
                api_key_env=settings.api_key_env,
                flavor="llamacpp" if settings.chat_template_model else "none",
                retries=0,  # on the device: nothing to wait out
            ),
            base_url=settings.base_url,
        )
        window = Window(settings.n_ctx, byte_bound, "the edge model")
        if settings.chat_template_model:
            path = models.resolve(settings.chat_template_model)
            prompt = await anyio.to_thread.run_sync(ChatPrompt.of_model, path)
            client.scoring = LlamaCppScoring(prompt)
            window = prompt.window(settings.n_ctx, "the edge model")
        log.info("edge: the OpenAI-compatible server at %s", settings.base_url)
        return DeviceServerEdge(client, window)
    path = models.resolve(settings.model)
    name = settings.model if settings.model in models.EMBEDDED else path.stem
    log.info("loading edge model %s", path)
    edge = await anyio.to_thread.run_sync(
        lambda: LlamaCppEdge(
            path,
            model_name=name,
            n_ctx=settings.n_ctx,
            n_threads=settings.n_threads,
            seed=settings.seed,
            n_gpu_layers=settings.n_gpu_layers,
            flash_attn=settings.flash_attn,
            n_batch=settings.n_batch,
            chat_format=settings.chat_format,
            prompt_cache_bytes=settings.prompt_cache_mb << 20,
        )
    )
    edge.model_sha256 = await anyio.to_thread.run_sync(models.file_sha256, settings.model, path)
    return edge


async def cloud_window_of(settings: CloudSettings, standin: StandInServer | None) -> Window | None:
    """The cloud's window: the stand-in's is known exactly; a remote one's size comes
    from ``cloud.n_ctx``, counted with ``cloud.chat_template_model``'s tokenizer if given,
    else with a bound that never undercounts."""
    name = "the cloud model"
    if standin is not None:
        prompt = await anyio.to_thread.run_sync(ChatPrompt.of_model, standin.model_path)
        return prompt.window(settings.standin.n_ctx, name)
    if settings.n_ctx is None:
        return None
    if settings.chat_template_model:
        path = models.resolve(settings.chat_template_model)
        prompt = await anyio.to_thread.run_sync(ChatPrompt.of_model, path)
        return prompt.window(settings.n_ctx, name)
    return Window(settings.n_ctx, byte_bound, name)
