"""A fake adb server speaking the adb *host* protocol on 127.0.0.1, for tests without a phone.

The real `adb` client binary (Debian's adb 29.0.6 here) talks to it exactly as it talks to a
real adb server, so the tests exercise the real client's command-line handling, its
transport selection and its shell framing; only the phone behind the server is scripted.

Protocol as documented in AOSP's `adb/SERVICES.TXT`, `adb/OVERVIEW.TXT` and the shell v2
header (`shell_protocol.h`), and checked against what this client actually sends:

* a request is 4 lowercase hex digits of length, then the text, e.g. `000chost:version`;
* the reply is `OKAY` or `FAIL` + a 4-hex-digit-length message; query replies carry a
  4-hex-digit-length payload after `OKAY`;
* `host:version` must answer 41 (0x29) or this client kills the "outdated" server;
* `host:tport:serial:<s>` / `host:tport:any` switch the socket to a device and answer
  `OKAY` + the 8-byte little-endian transport id; `host:transport:<s>` answers plain `OKAY`;
* after the switch, `shell,v2,raw:<cmd>` streams shell v2 packets (1 byte id, 4 byte
  little-endian length, data; id 1 stdout, 2 stderr, 3 exit code), `shell:<cmd>` and
  `exec:<cmd>` stream raw bytes and close.
"""

from __future__ import annotations

import re
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Callable

ADB_SERVER_VERSION = 41  # what adb 1.0.41 (platform-tools 29+) expects
FEATURES = "shell_v2,cmd,stat_v2,ls_v2,fixed_push_mkdir,apex,abb,fixed_push_symlink_timestamp,abb_exec"

# A shell command's scripted result: stdout bytes, exit code.
ShellResult = tuple[bytes, int]
ShellScript = Callable[[str], "ShellResult | None"]


@dataclass
class FakeDevice:
    """One scripted phone: its state, its `devices -l` details and its shell."""

    serial: str
    state: str = "device"  # device | unauthorized | offline
    transport_id: int = 1
    product: str = "oriole"
    model: str = "Pixel_6"
    device: str = "oriole"
    responses: dict[str, ShellResult] = field(default_factory=dict)
    handlers: list[ShellScript] = field(default_factory=list)
    screencap_png: bytes = b""
    sdk: int = 34  # what `getprop ro.build.version.sdk` answers (34: Android 14)
    commands: list[str] = field(default_factory=list)

    def set(self, command: str, stdout: str | bytes, exit_code: int = 0) -> None:
        """Answer `command` (exactly as the device shell receives it) with `stdout`."""
        data = stdout.encode() if isinstance(stdout, str) else stdout
        self.responses[command] = (data, exit_code)

    def run(self, command: str) -> ShellResult:
        """What the device's shell prints for `command`; records it in `commands`."""
        self.commands.append(command)
        for handler in self.handlers:
            result = handler(command)
            if result is not None:
                return result
        return self._run_pipeline(command)

    def _run_pipeline(self, command: str) -> ShellResult:
        # Just enough of a shell for `cmd | grep -E 'a|b'`, which the env uses to keep big
        # dumpsys outputs on the phone.
        base, _, rest = command.partition(" | grep -E ")
        if base == "screencap -p":
            return self.screencap_png, 0
        if base == "getprop ro.build.version.sdk" and base not in self.responses:
            return f"{self.sdk}\n".encode(), 0
        out, code = self.responses.get(base, (b"", 0))
        if rest:
            pattern = rest.strip().strip("'")
            lines = [ln for ln in out.decode().splitlines(True) if re.search(pattern, ln)]
            out = "".join(lines).encode()
            code = 0 if lines else 1
        return out, code

    def long_line(self) -> str:
        details = f"product:{self.product} model:{self.model} device:{self.device} "
        if self.state != "device":
            details = ""
        return f"{self.serial:<22} {self.state} {details}transport_id:{self.transport_id}\n"


class FakeAdbServer:
    """A threaded adb host-protocol server on 127.0.0.1 and a free port."""

    def __init__(self, devices: list[FakeDevice] | None = None) -> None:
        self.devices: list[FakeDevice] = list(devices or [])
        self.requests: list[str] = []  # every host request, in order, for protocol checks
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port: int = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> FakeAdbServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        # Stop the accept loop before closing: closing a socket another thread is about to
        # accept() on lets a new socket reuse its fd number and be served by this old loop.
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._sock.close()

    def __enter__(self) -> FakeAdbServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def socket_spec(self) -> str:
        return f"tcp:127.0.0.1:{self.port}"

    def device(self, serial: str) -> FakeDevice:
        return next(d for d in self.devices if d.serial == serial)

    # -- protocol -----------------------------------------------------------------------
    def _serve(self) -> None:
        self._sock.settimeout(0.1)  # poll, so that stop() is seen promptly
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            try:
                self._dispatch(conn)
            except (OSError, ConnectionError, ValueError):
                pass

    @staticmethod
    def _read_exact(conn: socket.socket, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                raise ConnectionError("client closed")
            data += chunk
        return data

    def _read_request(self, conn: socket.socket) -> str:
        length = int(self._read_exact(conn, 4), 16)
        request = self._read_exact(conn, length).decode()
        self.requests.append(request)
        return request

    @staticmethod
    def _okay(conn: socket.socket, payload: str | None = None) -> None:
        reply = b"OKAY"
        if payload is not None:
            data = payload.encode()
            reply += f"{len(data):04x}".encode() + data
        conn.sendall(reply)

    @staticmethod
    def _fail(conn: socket.socket, message: str) -> None:
        data = message.encode()
        conn.sendall(b"FAIL" + f"{len(data):04x}".encode() + data)

    def _dispatch(self, conn: socket.socket) -> None:
        request = self._read_request(conn)
        if request == "host:version":
            self._okay(conn, f"{ADB_SERVER_VERSION:04x}")
        elif request in ("host:devices", "host:devices-l"):
            if request == "host:devices":
                text = "".join(f"{d.serial}\t{d.state}\n" for d in self.devices)
            else:
                text = "".join(d.long_line() for d in self.devices)
            self._okay(conn, text)
        elif request == "host:host-features":
            self._okay(conn, FEATURES)
        elif request.endswith(":features"):
            device, error = self._select(request[: -len(":features")])
            if device is None:
                self._fail(conn, error)
            else:
                self._okay(conn, FEATURES)
        elif request.startswith(("host:transport", "host:tport:")):
            device, error = self._select(request)
            if device is None:
                self._fail(conn, error)
                return
            if request.startswith("host:tport:"):
                conn.sendall(b"OKAY" + struct.pack("<q", device.transport_id))
            else:
                self._okay(conn)
            self._device_service(conn, device, self._read_request(conn))
        elif request == "host:kill":
            self._okay(conn)
        else:
            self._fail(conn, f"unknown host service '{request}'")

    def _select(self, request: str) -> tuple[FakeDevice | None, str]:
        """The device a transport/features request names, or the error adb would give."""
        serial: str | None = None
        for prefix in ("host:tport:serial:", "host:transport:", "host-serial:"):
            if request.startswith(prefix):
                serial = request[len(prefix):]
        if serial is not None:
            matches = [d for d in self.devices if d.serial == serial]
            if not matches:
                return None, f"device '{serial}' not found"
        else:  # any / usb / local
            matches = list(self.devices)
            if not matches:
                return None, "no devices/emulators found"
            if len(matches) > 1:
                return None, "more than one device/emulator"
        device = matches[0]
        if device.state == "unauthorized":
            return None, (
                "device unauthorized.\nThis adb server's $ADB_VENDOR_KEYS is not set\n"
                "Try 'adb kill-server' if that seems wrong.\n"
                "Otherwise check for a confirmation dialog on your device."
            )
        if device.state == "offline":
            return None, "device offline"
        return device, ""

    def _device_service(self, conn: socket.socket, device: FakeDevice, service: str) -> None:
        if service.startswith("shell,v2,") or service.startswith("shell,raw,v2"):
            command = service.split(":", 1)[1]
            out, code = device.run(command)
            self._okay(conn)
            packets = b""
            for start in range(0, len(out), 65536):
                chunk = out[start:start + 65536]
                packets += b"\x01" + struct.pack("<I", len(chunk)) + chunk
            packets += b"\x03" + struct.pack("<I", 1) + bytes([code & 0xFF])
            conn.sendall(packets)
            self._drain(conn)
        elif service.startswith(("shell:", "exec:")):
            command = service.split(":", 1)[1]
            out, _ = device.run(command)
            self._okay(conn)
            conn.sendall(out)
            self._drain(conn)
        else:
            self._fail(conn, f"unknown device service '{service}'")

    @staticmethod
    def _drain(conn: socket.socket) -> None:
        # Half-close and read what the client still sends (stdin close packets) so that
        # closing does not reset the connection before the client read our output.
        try:
            conn.shutdown(socket.SHUT_WR)
            conn.settimeout(5)
            while conn.recv(4096):
                pass
        except OSError:
            pass
