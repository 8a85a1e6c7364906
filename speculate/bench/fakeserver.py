"""``python -m speculate.bench.fakeserver --port P``: the real server on fake models.

For load tests that must measure the server's own CPU in its own process."""

from __future__ import annotations

import argparse
from typing import Any

from speculate.bench.baseline import baseline_app
from speculate.bench.fake import FakeBackend
from speculate.bench.inprocess import quiet_settings
from speculate.engine.context import Backends
from speculate.server import create_app
from speculate.server.run import DrainingServer, uvicorn_config


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tps", type=float, default=10.0, help="fake tokens per second")
    parser.add_argument("--max-streams", type=int, default=100_000)
    parser.add_argument(
        "--baseline",
        type=int,
        metavar="TOKENS",
        help="serve the minimal app that streams the same frames instead (answers of TOKENS)",
    )
    args = parser.parse_args()
    settings = quiet_settings()
    settings.server.max_concurrent_streams = args.max_streams
    settings.server.max_streams_per_client = args.max_streams
    settings.server.max_connections = args.max_streams
    backends = Backends(
        edge=FakeBackend("fake-edge", args.tps, 1), cloud=FakeBackend("fake-cloud", args.tps * 2, 2)
    )
    app: Any = create_app(settings, backends)
    if args.baseline:
        app = baseline_app(args.tps, args.baseline)
    config = uvicorn_config(app, settings, port=args.port)
    config.access_log = False
    config.backlog = 4096
    DrainingServer(config).run()


if __name__ == "__main__":
    main()
