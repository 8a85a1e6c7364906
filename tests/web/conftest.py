"""A real Chromium (Debian's, driven by Playwright) against real uvicorn servers."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from speculate.engine.context import Backends
from speculate.server import create_app
from speculate.settings import Settings
from tests.scripted import BookBackend, Script, ScriptBook
from tests.servers import serve_in_thread

CHROMIUM = "/usr/bin/chromium"

SCRIPTS = {
    "Tell me about the Eiffel Tower": Script(
        draft="The Eiffel Tower is in Paris and was built in 1899 for the world fair. "
        "It is made of steel and is 200 metres tall.",
        cloud="The Eiffel Tower is in Paris. It was completed in 1889 for the World's Fair. "
        "It is made of wrought iron and is 330 metres tall.",
        draft_delay_s=0.03,
        cloud_delay_s=0.12,
        cloud_start_s=0.6,
    ),
    "Unicode": Script(
        draft="Emoji 👋🏽 and 漢字 with café and e\u0301 stay whole. 🇫🇷 flag.",
        cloud="Emoji 👋🏽 and 漢字かな with cafe\u0301 and é stay whole 🎉. 🇫🇷 flags!",
        cloud_start_s=0.2,
    ),
    "Inject": Script(
        draft='Here: <img src=x onerror="window.__pwned=1"> and <b>bold</b>',
        cloud='Safe text <script>window.__pwned=2</script> <img src=x onerror="window.__pwned=3">'
        "\n\n```html\n<script>window.__pwned=4</script>\n```\n\n- **list** `code`",
    ),
    "Long": Script(
        draft=" ".join(f"word{i}" for i in range(400)),
        cloud=" ".join(f"word{i}" for i in range(300)),
        draft_delay_s=0.02,
        cloud_delay_s=0.05,
        cloud_start_s=0.5,
    ),
}
SCRIPTS["Markdown"] = Script(
    draft="A table, links and code follow.",
    cloud="| tip | why |\n|---|---|\n| sleep | rest |\n\n"
    "See [the docs](https://example.com/docs) or [this](javascript:window.__pwned=7).\n\n"
    "> quoted line\n\n"
    "1. outer\n   - inner one\n   - inner two\n2. second\n\n"
    "![tracker](https://example.com/pixel.png)\n\n"
    "```python\ndef add(a, b):\n    return a + b  # <b>not bold</b>\n```\n\n"
    "1. first tip\n\n2. second tip\n\n3. third tip\n",
    cloud_start_s=0.1,
)
SCRIPTS["Blocks"] = Script(
    draft="Thinking about it.",
    cloud="The **first** paragraph is settled early.\n\n"
    + " ".join(f"w{i}" for i in range(60))
    + "\n\nThe end.",
    cloud_delay_s=0.04,
    cloud_start_s=0.1,
)
SCRIPTS["Offline"] = Script(
    draft="The draft answers while the cloud is away.",
    cloud="The cloud's refined answer, delivered later.",
    cloud_start_s=0.3,
    flaky=True,
)
DEFAULT = Script(draft="Hello there, friend.", cloud="Hello there, my friend!")


@dataclass
class ScriptedServer:
    url: str
    book: ScriptBook


@pytest.fixture(scope="session")
def scripted_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScriptedServer]:
    """create_app with scripted backends: the UI's own logic under test, served for real."""
    book = ScriptBook(dict(SCRIPTS), DEFAULT)
    backends = Backends(edge=BookBackend(book, "edge"), cloud=BookBackend(book, "cloud"))
    db = tmp_path_factory.mktemp("scripted") / "requests.db"
    settings = Settings(
        server={"resume_grace_s": 10, "rate_per_minute": 0}, store={"path": str(db)}
    )  # type: ignore[arg-type]
    with serve_in_thread(create_app(settings, backends), settings) as url:
        yield ScriptedServer(url, book)


@pytest.fixture(scope="module")  # Playwright's sync API holds an event loop: release it
def browser() -> Iterator[Browser]:  # before any async test of another module runs
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-background-networking"],
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


class DropProxy:
    """A loopback TCP proxy whose connections can all be cut at once (a network drop)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections: list[socket.socket] = []
        self.accepted = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self.lock:
                self.accepted += 1
                self.connections += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def drop_all(self) -> None:
        with self.lock:
            doomed, self.connections = self.connections, []
        for sock in doomed:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.listener.close()
        self.drop_all()
