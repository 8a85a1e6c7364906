"""Slowloris under a 1,024-descriptor limit: 1,100 connections that never finish their
request headers.  The server logs the cap, keeps answering /healthz, closes the slow
connections after the header deadline, and a WebSocket (upgraded, not slow) survives."""

from __future__ import annotations

import json
import resource
import socket
import time
from pathlib import Path

import psutil
import pytest
import websockets.sync.client

from speculate.client import ws_url
from tests.servers import start_server

pytestmark = pytest.mark.slow

SLOW_CONNECTIONS = 1100
HEADER_TIMEOUT_S = 3


def healthz(host: str, port: int) -> int:
    with socket.create_connection((host, port), timeout=10) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        status = conn.recv(1024).split(b"\r\n", 1)[0]
    return int(status.split()[1])


def test_slow_headers_neither_exhaust_descriptors_nor_block_health(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < SLOW_CONNECTIONS + 200:  # the attacker's side needs the descriptors
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    server = start_server(
        str(tmp_path),
        {
            "SPECULATE_CLOUD__ENABLED": "false",
            "SPECULATE_SERVER__HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        },
        max_files=1024,
    )
    host, port = "127.0.0.1", int(server.url.rsplit(":", 1)[1])
    process = psutil.Process(server.process.pid)
    sockets: list[socket.socket] = []
    try:
        baseline = process.num_fds()
        with websockets.sync.client.connect(ws_url(server.url)) as websocket:
            flood_and_check(host, port, process, baseline, sockets, websocket)
    finally:
        for conn in sockets:
            conn.close()
        server.stop()
    log = server.log()
    assert "connection cap" in log
    assert f"did not finish their request headers within {HEADER_TIMEOUT_S:g} s" in log


def flood_and_check(
    host: str,
    port: int,
    process: psutil.Process,
    baseline: int,
    sockets: list[socket.socket],
    websocket: websockets.sync.client.ClientConnection,
) -> None:
    for _ in range(SLOW_CONNECTIONS):
        conn = socket.socket()
        conn.settimeout(5)
        try:
            conn.connect((host, port))
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        except OSError:  # closed to make room: the defence at work
            conn.close()
            continue
        sockets.append(conn)
    # While 1,100 slow clients press on a 1,024-descriptor server, health answers.
    statuses = [healthz(host, port) for _ in range(5)]
    pressed = process.num_fds()
    print(
        f"\n{len(sockets)} slow connections held by the client; server descriptors "
        f"{baseline} before, {pressed} under the flood; /healthz {statuses}"
    )
    assert statuses == [200] * 5
    assert pressed < 1024

    # The header deadline closes the slow connections ...
    deadline = time.monotonic() + HEADER_TIMEOUT_S + 20
    while process.num_fds() > baseline + 20:
        assert time.monotonic() < deadline, f"{process.num_fds()} descriptors still open"
        time.sleep(0.2)  # another process offers no event: bounded poll
    print(f"server descriptors {process.num_fds()} after the header deadline")
    # ... but not the WebSocket, whose headers were done long ago.
    websocket.send(
        json.dumps({"type": "speculate", "messages": [{"role": "user", "content": "Hi"}]})
    )
    first = json.loads(websocket.recv(timeout=30))
    assert first["event"] == "start"
