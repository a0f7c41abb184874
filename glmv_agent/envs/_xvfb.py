"""A virtual X display (Xvfb) for running the desktop environment headless.

    with VirtualDisplay(1920, 1080) as display:
        env = DesktopEnv(display=display.name)

Linux only; needs the `Xvfb` binary (Debian/Ubuntu: `apt-get install xvfb`).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from ..errors import EnvError

logger = logging.getLogger(__name__)

_SOCKET_DIR = Path("/tmp/.X11-unix")


def _display_free(number: int) -> bool:
    return not (_SOCKET_DIR / f"X{number}").exists() and not Path(f"/tmp/.X{number}-lock").exists()


def stop_process(process: subprocess.Popen[Any], timeout: float = 5.0) -> None:
    """Terminate a child process, kill it if it does not exit in `timeout`, and reap it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def ensure_xauthority() -> None:
    """pyautogui (python-xlib) fails without an ~/.Xauthority file; an empty one suffices."""
    path = Path(os.environ.get("XAUTHORITY", Path.home() / ".Xauthority"))
    if not path.exists():
        path.touch()


def quiet_xlib_auth() -> None:
    """Send python-xlib's authority-file notices to the log instead of stdout.

    python-xlib `print()`s "Xlib.xauth: warning, no xauthority details available" on every
    X connection when the file has no entries, which is normal for Xvfb and for the empty
    file `ensure_xauthority` creates: every desktop process printed it two or three times.
    Its module calls the builtin `print`; a module-level `print` shadows it for that
    module only. Idempotent; does nothing without python-xlib.
    """
    try:
        import Xlib.xauth as xauth
    except ImportError:
        return
    xauth.print = _log_xauth_notice  # type: ignore[attr-defined]


def _log_xauth_notice(*parts: object, **_: object) -> None:
    text = " ".join(str(part) for part in parts)
    # "no xauthority details" is routine; "failed to parse" means a damaged file.
    logging.getLogger("Xlib.xauth").log(
        logging.WARNING if "failed" in text else logging.DEBUG, "%s", text)


class VirtualDisplay:
    """Start `Xvfb :N -screen 0 WxHx24` on a free display number; stop it on exit."""

    def __init__(
        self, width: int = 1920, height: int = 1080, *, depth: int = 24,
        first_number: int = 90, start_timeout: float = 10.0,
    ) -> None:
        if width <= 0 or height <= 0:
            raise EnvError(f"virtual display size must be positive, got {width}x{height}")
        self.width = width
        self.height = height
        self.depth = depth
        self.first_number = first_number
        self.start_timeout = start_timeout
        self.number: int | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        if self.number is None:
            raise EnvError("the virtual display is not started; call start() first")
        return f":{self.number}"

    def start(self) -> VirtualDisplay:
        binary = shutil.which("Xvfb")
        if binary is None:
            raise EnvError("Xvfb is not installed; install it (apt-get install xvfb) to run headless")
        ensure_xauthority()
        for number in range(self.first_number, self.first_number + 100):
            if not _display_free(number):
                continue
            process = subprocess.Popen(
                [binary, f":{number}", "-screen", "0", f"{self.width}x{self.height}x{self.depth}",
                 "-nolisten", "tcp", "-noreset"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            try:
                ready = self._wait_ready(number, process)
            except BaseException:  # e.g. Ctrl+C while waiting: never leave Xvfb behind
                stop_process(process, timeout=0)
                raise
            if ready:
                self.number, self._process = number, process
                logger.info("Xvfb :%d started (%dx%d)", number, self.width, self.height)
                return self
            # Lost a race for this number with another process, or Xvfb failed: try the next.
            stop_process(process, timeout=0)
        raise EnvError(f"could not start Xvfb on any display from :{self.first_number}")

    def _wait_ready(self, number: int, process: subprocess.Popen[bytes]) -> bool:
        deadline = time.monotonic() + self.start_timeout
        socket = _SOCKET_DIR / f"X{number}"
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            if socket.exists():
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process)
            self._process = None
        self.number = None

    def __enter__(self) -> VirtualDisplay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
