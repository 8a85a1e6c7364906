"""What the app keeps on ``app.state``, built at start-up and torn down at shutdown."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from speculate.backends import models
from speculate.backends.chat_prompt import ChatPrompt
from speculate.backends.llamacpp import LlamaCppEdge, default_threads
from speculate.backends.openai_compat import OpenAICompatCloud
from speculate.backends.scoring import LlamaCppScoring, Scoring, VLLMScoring
from speculate.backends.standin import StandInServer
from speculate.engine.cloud_health import CloudHealth
from speculate.engine.context import Backends, RunObserver
from speculate.engine.eventlog import RequestRegistry
from speculate.engine.jobs import Jobs
from speculate.engine.orchestrator import Orchestrator
from speculate.engine.refiner import Refiner
from speculate.errors import CloudError, ConfigError
from speculate.policy.privacy import PrivacyGuard
from speculate.server.logs import RequestLogger
from speculate.server.metrics import Metrics
from speculate.server.ratelimit import RateLimiter
from speculate.settings import CloudSettings, Settings
from speculate.storage.answer_cache import AnswerCache
from speculate.storage.db import default_path
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
    started_at: float = field(default_factory=time.monotonic)

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
        )

    def close_stores(self) -> None:
        if self.request_log is not None:
            self.request_log.close()
        if self.refiner is not None:
            self.refiner.close()

    async def aclose(self) -> None:
        self.close_stores()
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
    edge_path = models.resolve(settings.edge.model)
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
        )
    edge_name = settings.edge.model if settings.edge.model in models.EMBEDDED else edge_path.stem
    log.info("loading edge model %s", edge_path)
    edge = await anyio.to_thread.run_sync(
        lambda: LlamaCppEdge(
            edge_path,
            model_name=edge_name,
            n_ctx=settings.edge.n_ctx,
            n_threads=settings.edge.n_threads,
            seed=settings.edge.seed,
        )
    )
    if not cloud_settings.enabled:
        return Backends(edge=edge, cloud=None), None
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
    except BaseException:
        if standin is not None:
            with anyio.CancelScope(shield=True):
                await standin.stop()
        raise
    return Backends(edge=edge, cloud=cloud), standin
