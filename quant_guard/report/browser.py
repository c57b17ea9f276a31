"""Headless Chromium over the DevTools protocol, for checking a report the way a person sees it.

The browser is driven through ``--remote-debugging-pipe`` (file descriptors 3 and 4 carry
NUL-separated JSON messages), so no WebDriver, websocket library or network port is needed:
only a ``chromium`` binary (``ci/install_browser.sh`` installs Debian's).

    with Browser.launch() as browser:
        page = browser.open(Path("qg-report/index.html"))
        page.evaluate("document.title")
        page.problems  # console errors, uncaught exceptions, failed loads
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

BROWSER_ENV = "QG_CHROMIUM"  # explicit path of the browser binary
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--disable-extensions", "--hide-scrollbars", "--mute-audio",
         "--remote-debugging-pipe")


class BrowserError(RuntimeError):
    """The browser is missing, died, or did not answer in time."""


def find_browser() -> str | None:
    """Path of a Chromium binary: ``$QG_CHROMIUM``, else the first of CANDIDATES on PATH."""
    explicit = os.environ.get(BROWSER_ENV)
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class Page:
    """One open tab: evaluate JavaScript, read what went wrong, take screenshots."""

    browser: Browser
    session_id: str
    problems: list[str] = field(default_factory=list)  # console errors, exceptions, failed loads
    requests: list[str] = field(default_factory=list)  # every URL the page asked for

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        return self.browser.call(method, session_id=self.session_id, **params)

    def evaluate(self, expression: str) -> Any:
        """Value of a JavaScript expression (awaited when it is a promise)."""
        reply = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in reply:
            raise BrowserError(f"JavaScript failed: {reply['exceptionDetails'].get('exception', reply)}")
        return reply["result"].get("value")

    def click(self, x: float, y: float) -> None:
        """A real left click (mouse events through the browser's input pipeline) at page coordinates."""
        self.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def screenshot(self, path: Path, *, width: int = 1280, full_page: bool = True) -> None:
        height = int(self.evaluate("document.documentElement.scrollHeight")) if full_page else 800
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=False)
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=full_page)["data"]
        path.write_bytes(base64.b64decode(data))

    def _event(self, message: dict[str, Any]) -> None:
        method, params = message.get("method", ""), message.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            self.problems.append(f"console.{params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.problems.append(f"exception: {details.get('exception', {}).get('description') or details.get('text')}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            self.problems.append(f"log ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}".strip())
        elif method == "Network.requestWillBeSent":
            self.requests.append(params.get("request", {}).get("url", ""))
        elif method == "Network.loadingFailed":
            self.problems.append(f"load failed: {params.get('errorText')} ({params.get('type')})")


class Browser:
    """A headless Chromium process with a fresh profile, talked to over the DevTools pipe."""

    def __init__(self, process: subprocess.Popen[bytes], to_browser: int, from_browser: int, profile: Path) -> None:
        self._process, self._out, self._in, self._profile = process, to_browser, from_browser, profile
        self._ids = itertools.count(1)
        self._buffer = b""
        self._pages: dict[str, Page] = {}
        self.timeout_s = 60.0

    @classmethod
    def launch(cls, binary: str | None = None) -> Browser:
        binary = binary or find_browser()
        if binary is None:
            raise BrowserError(f"no Chromium found (set ${BROWSER_ENV} or run ci/install_browser.sh)")
        profile = Path(tempfile.mkdtemp(prefix="qg-chromium-"))
        # pipe A: we write, the browser reads fd 3; pipe B: the browser writes fd 4, we read
        a_read, a_write = os.pipe()
        b_read, b_write = os.pipe()

        def child_fds() -> None:  # in the child: move both ends out of the way, then onto 3 and 4
            import fcntl

            high_a, high_b = fcntl.fcntl(a_read, fcntl.F_DUPFD, 10), fcntl.fcntl(b_write, fcntl.F_DUPFD, 10)
            os.dup2(high_a, 3)  # dup2 makes them inheritable
            os.dup2(high_b, 4)

        # close_fds=False: pass_fds would close 3 and 4 after preexec_fn; Python's own fds are
        # non-inheritable anyway (PEP 446), so nothing else leaks into the browser
        process = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   preexec_fn=child_fds, close_fds=False)
        os.close(a_read)
        os.close(b_write)
        return cls(process, a_write, b_read, profile)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (BrowserError, OSError):
            pass
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        for fd in (self._out, self._in):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self._profile, ignore_errors=True)

    # ---- protocol -----------------------------------------------------------------------------

    def call(self, method: str, *, session_id: str | None = None, **params: Any) -> dict[str, Any]:
        """Send one command and wait for its answer; events that arrive meanwhile go to their page."""
        message_id = next(self._ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params}
        if session_id:
            message["sessionId"] = session_id
        os.write(self._out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout_s
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            page = self._pages.get(reply.get("sessionId", ""))
            if page is not None:
                page._event(reply)

    def _receive(self, deadline: float) -> dict[str, Any]:
        import select

        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"Chromium did not answer within {self.timeout_s:.0f} s")
            ready, _, _ = select.select([self._in], [], [], left)
            if ready:
                chunk = os.read(self._in, 1 << 20)
                if not chunk:
                    raise BrowserError(f"Chromium exited (status {self._process.poll()})")
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)  # type: ignore[no-any-return]

    def wait_for(self, page: Page, expression: str, *, timeout_s: float = 30.0) -> None:
        """Poll a JavaScript condition (events keep being collected meanwhile)."""
        deadline = time.monotonic() + timeout_s
        while not page.evaluate(expression):
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out waiting for {expression!r}")
            time.sleep(0.05)

    # ---- pages --------------------------------------------------------------------------------

    def open(self, path: Path, *, width: int = 1280, height: int = 900) -> Page:
        """Open a local file in a new tab and wait until it and its images have loaded."""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        session_id = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        page = Page(self, session_id)
        self._pages[session_id] = page
        for domain in ("Runtime", "Log", "Network", "Page"):
            page.call(f"{domain}.enable")
        page.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=False)
        page.call("Page.navigate", url=path.resolve().as_uri())
        self.wait_for(page, "document.readyState === 'complete'")
        return page


# ---- checking a quant_guard report -----------------------------------------------------------

_IMAGES_JS = """(async () => {
  await Promise.all([...document.images].map(i => i.complete ? null
      : new Promise(done => { i.addEventListener('load', done); i.addEventListener('error', done); })));
  return [...document.images].map(i => ({src: i.getAttribute('src'), naturalWidth: i.naturalWidth}));
})()"""

# Geometry of compare widget number N after scrolling it into view, and what is on top where.
_WIDGET_JS = """((n) => {
  const fig = document.querySelectorAll('[data-qg-compare]')[n];
  fig.scrollIntoView({block: 'center'});
  const box = e => { const r = e.getBoundingClientRect(); return {x: r.left, y: r.top, w: r.width, h: r.height}; };
  const stack = box(fig.querySelector('.stack'));
  const onTop = f => {
    const e = document.elementFromPoint(stack.x + stack.w * f, stack.y + stack.h / 2);
    if (!e) return 'nothing';
    return e.classList.contains('gold') ? 'golden' : (e.classList.contains('cand') ? 'candidate' : 'other');
  };
  return {range: box(fig.querySelector('input[type=range]')), flip: box(fig.querySelector('[data-qg-flip]')),
          value: Number(fig.querySelector('input[type=range]').value), showing: fig.getAttribute('data-showing'),
          at: {left: onTop(0.05), middle: onTop(0.5), right: onTop(0.95)}};
})"""


@dataclass
class ReportCheck:
    """What a person would notice: broken images, console errors, a comparison that does not move."""

    images: list[dict[str, Any]]
    widgets: list[dict[str, Any]]  # per compare widget: the state after each interaction
    problems: list[str]  # console errors, exceptions, failed loads, non-file requests

    @property
    def broken_images(self) -> list[str]:
        return [i["src"] for i in self.images if not i["naturalWidth"]]


def check_report(page: Page, *, max_widgets: int | None = None) -> ReportCheck:
    """Load every image, then drive each golden/candidate comparison with real mouse clicks:
    slider near the left end, near the right end, flip, flip again."""
    images = page.evaluate(_IMAGES_JS)
    count = int(page.evaluate("document.querySelectorAll('[data-qg-compare]').length"))
    widgets = []
    for n in range(count if max_widgets is None else min(count, max_widgets)):
        states: dict[str, Any] = {"initial": page.evaluate(f"{_WIDGET_JS}({n})")}
        for name, fraction in (("slider_left", 0.1), ("slider_right", 0.9)):
            r = states["initial"]["range"]
            page.click(r["x"] + r["w"] * fraction, r["y"] + r["h"] / 2)
            states[name] = page.evaluate(f"{_WIDGET_JS}({n})")
        for name in ("flip_1", "flip_2"):
            f = page.evaluate(f"{_WIDGET_JS}({n})")["flip"]
            page.click(f["x"] + f["w"] / 2, f["y"] + f["h"] / 2)
            states[name] = page.evaluate(f"{_WIDGET_JS}({n})")
        widgets.append(states)
    page.evaluate("1")  # collect events that arrived last
    foreign = [u for u in page.requests if not u.startswith(("file:", "data:", "about:"))]
    return ReportCheck(images, widgets, [*page.problems, *(f"request outside the report: {u}" for u in foreign)])
