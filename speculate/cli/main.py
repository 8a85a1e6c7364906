"""The ``speculate`` command: serve, ask, models, bench."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from speculate.errors import SpeculateError

if TYPE_CHECKING:
    from speculate.settings import Settings


def _serve(args: argparse.Namespace) -> int:
    from speculate.backends import models
    from speculate.server import create_app
    from speculate.server.logs import configure as configure_logging
    from speculate.server.run import DrainingServer, uvicorn_config
    from speculate.settings import DEFAULT_CONFIG, Settings

    overrides: dict[str, dict[str, object]] = {"server": {}}
    if args.host:
        overrides["server"]["host"] = args.host
    if args.port is not None:
        overrides["server"]["port"] = args.port
    settings = Settings.load(args.config, **overrides)
    # Fail before binding the port, with a message that says what to do; a Hugging Face
    # model not yet in its cache is fetched now (with a progress bar), never mid-request.
    needed = [] if settings.edge.base_url else [settings.edge.model]
    if settings.cloud.enabled and settings.cloud.base_url is None:
        needed.append(settings.cloud.standin.model)
    for name in needed:
        if models.hub_reference(name) is not None:
            models.pull(name)
        models.resolve(name)
    configure_logging(settings.server.log_format)
    config_path = Path(args.config) if args.config else DEFAULT_CONFIG
    app = create_app(settings, config_path=config_path if config_path.exists() else None)
    DrainingServer(uvicorn_config(app, settings)).run()
    return 0


def _models(args: argparse.Namespace) -> int:
    from speculate.cli.models import list_models, pull_models

    if args.action == "pull":
        return pull_models(args.names, force=args.force)
    return list_models()


def _ask(args: argparse.Namespace) -> int:
    from speculate.cli.ask import ask

    return ask(
        args.prompt,
        url=args.url,
        mode=args.mode,
        transport=args.transport,
        max_tokens=args.max_tokens,
        api_key=args.api_key or os.environ.get("SPECULATE_API_KEY"),
    )


def _needs_bench_extra() -> None:
    import importlib.util

    from speculate.errors import ConfigError

    if importlib.util.find_spec("psutil") is None:
        raise ConfigError("the benchmarks need the bench extra: pip install 'speculate[bench]'")


def _bench(args: argparse.Namespace) -> int:
    _needs_bench_extra()
    from speculate.bench.runner import run

    return run(
        args.suites,
        quick=args.quick,
        json_out=args.json,
        requests=args.requests,
        config=args.config,
    )


def _store(args: argparse.Namespace) -> tuple[Settings, Path]:
    """The config (``--config``) and the database (``--db``, else the config's store)."""
    from speculate.settings import Settings
    from speculate.storage.db import default_path

    settings = Settings.load(args.config)
    return settings, Path(args.db or settings.store.path or default_path())


def _report(args: argparse.Namespace) -> int:
    from speculate.cli.report import run_report

    settings, db = _store(args)
    return run_report(
        db,
        Path(args.out),
        settings.costs,
        fleets=args.fleet,
        requests_per_month=args.requests_per_month,
    )


def _distill(args: argparse.Namespace) -> int:
    from speculate.cli.distill import export

    _, db = _store(args)
    return export(
        db,
        Path(args.out),
        since=args.since,
        min_edit_distance=args.min_edit_distance,
        limit=args.limit,
        largest_first=args.largest_first,
    )


def _calibrate(args: argparse.Namespace) -> int:
    from speculate.cli.calibrate import calibrate

    return calibrate(
        Path(args.prompts),
        cloud_share=args.cloud_share,
        cloud_only_share=args.cloud_only_share,
        config=args.config,
        write=Path(args.write) if args.write else None,
    )


def _soak(args: argparse.Namespace) -> int:
    _needs_bench_extra()
    import json
    from dataclasses import asdict

    from speculate.bench.soak import run_soak

    result = run_soak(
        clients=args.clients, requests=args.requests, minutes=args.minutes, url=args.url
    )
    print(json.dumps(asdict(result)))
    broken = result.lost_events + result.duplicate_events + result.mismatched_texts
    return 1 if broken or result.errors else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="speculate",
        description="Hybrid edge/cloud LLM streaming: an on-device draft at once, "
        "corrected live by a cloud model.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--config", help="YAML config (default: configs/default.yaml)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(func=_serve)

    ask = sub.add_parser("ask", help="ask a running server; watch the draft being corrected")
    ask.add_argument("prompt")
    ask.add_argument("--url", default="http://127.0.0.1:8000")
    ask.add_argument(
        "--mode", default="auto", choices=["auto", "speculative", "verify", "edge", "cloud"]
    )
    ask.add_argument("--transport", default="ws", choices=["ws", "sse"])
    ask.add_argument("--api-key", help="the server's API key (default: $SPECULATE_API_KEY)")
    ask.add_argument("--max-tokens", type=int)
    ask.set_defaults(func=_ask)

    models = sub.add_parser(
        "models", help="list or pull the embedded models (or hf:OWNER/REPO/FILE.gguf)"
    )
    models.add_argument("action", nargs="?", default="list", choices=["list", "pull"])
    models.add_argument("names", nargs="*", help="models to pull (default: all)")
    models.add_argument("--force", action="store_true", help="fetch again even if present")
    models.set_defaults(func=_models)

    bench = sub.add_parser(
        "bench",
        help="benchmarks, side by side in one run: ttft relay capacity latency diff wire peer "
        "network router verify",
    )
    bench.add_argument("suites", nargs="*", help="which suites (default: all)")
    bench.add_argument("--quick", action="store_true", help="short versions of suites 1-4")
    bench.add_argument("--requests", type=int, default=30, help="for time to first token")
    bench.add_argument("--config")
    bench.add_argument("--json", action="store_true", help="print one JSON object last")
    bench.set_defaults(func=_bench)

    report = sub.add_parser("report", help="tables and plots of the request log: latency, cost")
    report.add_argument("--db", help="request log (default: store.path from the config)")
    report.add_argument("--config", help="YAML config whose costs section prices the traffic")
    report.add_argument("--out", default="report", help="directory for the PNG plots")
    report.add_argument(
        "--fleet", type=int, nargs="+", default=[10, 100, 1000], help="fleet sizes to project"
    )
    report.add_argument("--requests-per-month", type=int, default=30_000)
    report.set_defaults(func=_report)

    distill = sub.add_parser("distill", help="export kept draft/answer pairs for fine-tuning")
    distill.add_argument("action", choices=["export"])
    distill.add_argument("--out", required=True, help="the JSONL file to write")
    distill.add_argument("--since", help="only pairs kept from this date on (2026-11-27)")
    distill.add_argument(
        "--min-edit-distance", type=int, default=0, help="only drafts this far off"
    )
    distill.add_argument("--limit", type=int, help="at most this many pairs")
    distill.add_argument(
        "--largest-first", action="store_true", help="the largest corrections first, and listed"
    )
    distill.add_argument("--db", help="the database (default: store.path from the config)")
    distill.add_argument("--config", help="YAML config")
    distill.set_defaults(func=_distill)

    calibrate = sub.add_parser(
        "calibrate", help="set the router's thresholds so a share of PROMPTS goes to the cloud"
    )
    calibrate.add_argument("prompts", help="JSON lines: {prompt | messages, label?}")
    calibrate.add_argument(
        "--cloud-share",
        type=float,
        required=True,
        help="share of prompts the cloud should see (0-1)",
    )
    calibrate.add_argument(
        "--cloud-only-share", type=float, help="share for the cloud alone (default: keep cloud_min)"
    )
    calibrate.add_argument("--config", help="the config to start from")
    calibrate.add_argument("--write", help="write a new config file with these thresholds")
    calibrate.set_defaults(func=_calibrate)

    soak = sub.add_parser(
        "soak", help="many clients with random disconnects, resumes and cancels; counts losses"
    )
    soak.add_argument("--clients", type=int, default=50)
    soak.add_argument("--requests", type=int, default=40, help="per client")
    soak.add_argument("--minutes", type=float, default=5.0, help="stop starting requests after")
    soak.add_argument("--url", help="a running server (default: one in-process, fake models)")
    soak.set_defaults(func=_soak)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except SpeculateError as exc:
        print(f"speculate: error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code
