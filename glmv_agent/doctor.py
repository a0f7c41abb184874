"""`glmv-agent doctor`: check what this machine can run and say how to fix what it can't.

Each check is independent and never raises: a missing optional piece is a warning (you
only need the parts for the environments you use), a broken requested piece (the model
you named, the server you named) is a failure.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .errors import ConfigError

Status = Literal["ok", "warn", "fail"]


@dataclass
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


def run_checks(model: str | None = None, base_url: str | None = None,
               load: bool = False, quantize: str | None = None,
               compile: bool = False) -> list[Check]:
    """Every check; `quantize` ("int8"/"int4") loads the model's weights that way (implies load);
    `compile` also compiles its decode step, as `load(..., compile=True)` does."""
    checks = [check_python(), check_torch()]
    checks += [check_module(name, extra) for name, extra in (
        ("safetensors", "local"), ("tokenizers", "local"), ("av", "video"),
        ("playwright", "web"), ("mss", "desktop"), ("pyautogui", "desktop"),
    )]
    checks += [check_browser(), check_display(), check_adb()]
    checks.append(check_model(Path(model), load, quantize) if model else check_default_models())
    if model and compile:
        checks.append(check_compile(Path(model), quantize))
    if base_url:
        checks.append(check_server(base_url))
    return checks


def check_python() -> Check:
    version = ".".join(map(str, sys.version_info[:3]))
    ok = sys.version_info >= (3, 10)
    return Check("python", "ok" if ok else "fail", version, "" if ok else "use Python 3.10 or newer")


def check_torch() -> Check:
    try:
        torch = importlib.import_module("torch")
    except ImportError:
        return Check("torch", "warn", "not installed (needed for the in-process engine)",
                     'pip install torch, then pip install "glmv-agent[local]"')
    from .glm4v import MIN_TORCH, require_torch

    try:
        require_torch(torch.__version__)
    except ConfigError:
        # Like a missing torch: only the in-process engine needs it.
        return Check("torch", "warn", f"{torch.__version__} is too old for the in-process "
                     f"engine (needs {MIN_TORCH} or newer)",
                     f'pip install "torch>={MIN_TORCH}" (the build for your hardware)')
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        memory = torch.cuda.get_device_properties(0).total_memory / 2**30
        detail = f"{torch.__version__}, CUDA device {name} ({memory:.0f} GiB)"
        status: Status = "ok" if memory >= 22 else "warn"
        fix = "" if status == "ok" else "a 9B model in bf16 needs ~21 GiB; use a server for scale"
        return Check("torch", status, detail, fix)
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return Check("torch", "ok", f"{torch.__version__}, Apple MPS")
    return Check("torch", "warn", f"{torch.__version__}, CPU only: a 9B model runs very slowly",
                 "use a GPU, or --base-url with a vLLM/SGLang server")


def check_module(name: str, extra: str) -> Check:
    try:
        module = importlib.import_module(name)
    except ImportError:
        return Check(name, "warn", "not installed", f'pip install "glmv-agent[{extra}]"')
    except Exception as exc:  # e.g. pyautogui failing to open a display
        return Check(name, "warn", f"installed but failed to import: {exc}")
    return Check(name, "ok", str(getattr(module, "__version__", "installed")))


def check_browser() -> Check:
    candidates = [os.environ.get("GLMV_CHROMIUM"), shutil.which("chromium"),
                  shutil.which("chromium-browser"), shutil.which("google-chrome")]
    found = next((c for c in candidates if c and Path(c).exists()), None)
    if found:
        return Check("browser", "ok", found)
    return Check("browser", "warn", "no Chromium found for the web environment",
                 "apt install chromium (or `playwright install chromium`), or set GLMV_CHROMIUM")


def check_display() -> Check:
    if sys.platform in ("darwin", "win32"):
        return Check("display", "ok", f"{sys.platform} desktop")
    display = os.environ.get("DISPLAY")
    if not display:
        return Check("display", "warn", "DISPLAY is not set (desktop environment unavailable)",
                     "run inside a desktop session, or start `Xvfb :99 &` and export DISPLAY=:99")
    try:
        import mss

        factory = getattr(mss, "MSS", None) or mss.mss  # mss >= 10 renamed the class
        with factory() as capture:
            monitors = capture.monitors[1:]
        sizes = ", ".join(f"{m['width']}x{m['height']}" for m in monitors)
        return Check("display", "ok", f"{display}: {len(monitors)} monitor(s) {sizes}")
    except Exception as exc:
        return Check("display", "warn", f"{display} is not usable: {exc}",
                     "check that the X server runs and ~/.Xauthority exists")


def check_adb() -> Check:
    adb = os.environ.get("GLMV_ADB") or shutil.which("adb")
    if not adb:
        return Check("adb", "warn", "adb not found (phone environment unavailable)",
                     "apt install adb, or install Android platform-tools")
    try:
        out = subprocess.run([adb, "devices"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check("adb", "warn", f"{adb} failed: {exc}")
    lines = [line.split() for line in out.stdout.splitlines()[1:] if line.strip()]
    ready = [p[0] for p in lines if len(p) > 1 and p[1] == "device"]
    other = [f"{p[0]} ({p[1]})" for p in lines if len(p) > 1 and p[1] != "device"]
    if ready:
        return Check("adb", "ok", f"devices: {', '.join(ready)}")
    detail = "no device connected" + (f"; not ready: {', '.join(other)}" if other else "")
    return Check("adb", "warn", detail,
                 "enable USB debugging, connect the phone and accept the RSA prompt")


def check_default_models() -> Check:
    root = Path("model")
    found = sorted(p.name for p in root.glob("*") if (p / "config.json").is_file()) if root.is_dir() else []
    if found:
        return Check("weights", "ok", f"checkpoints in model/: {', '.join(found)}")
    return Check("weights", "warn", "no checkpoint in ./model",
                 "download one (see model/README.md) or use --base-url")


def check_model(path: Path, load: bool, quantize: str | None = None) -> Check:
    try:
        from .glm4v.config import Glm4vConfig

        config = Glm4vConfig.from_file(path)
    except Exception as exc:
        return Check("weights", "fail", f"{path}: {exc}")
    shards = sorted(path.glob("*.safetensors"))
    size = sum(s.stat().st_size for s in shards) / 2**30
    detail = f"{path}: config ok, {len(shards)} shard(s), {size:.2f} GiB"
    if not load and not quantize:
        return Check("weights", "ok", detail + " (use --load to load them fully)")
    try:
        from .glm4v import load_model
        from .glm4v.quantize import summary

        loaded = load_model(path, device="auto", quantize=quantize)
    except Exception as exc:
        return Check("weights", "fail", f"{path}: loading failed: {exc}")
    del config
    return Check("weights", "ok", detail + (f", loaded with {summary(loaded)}" if quantize
                                            else ", loaded"))


def check_compile(path: Path, quantize: str | None = None) -> Check:
    """The decode step compiles here (torch.compile; on CPU inductor needs a C++ compiler)."""
    try:
        from .glm4v import load_model
        from .glm4v.compiled import CompiledDecodeStep

        seconds = CompiledDecodeStep(load_model(path, device="auto", quantize=quantize)).warm_up()
    except Exception as exc:
        return Check("compile", "fail", f"compiling the decode step failed: {exc}",
                     fix="on CPU install gcc (torch.compile's inductor builds C++ kernels), "
                         "or run without --compile")
    return Check("compile", "ok", f"decode step compiled in {seconds:.1f} s")


def check_server(base_url: str) -> Check:
    import httpx

    url = base_url.rstrip("/") + "/models"
    try:
        response = httpx.get(url, timeout=10, headers=_auth_headers())
    except httpx.HTTPError as exc:
        return Check("server", "fail", f"{url} unreachable: {exc}",
                     "start it (vLLM, SGLang or `glmv-agent serve`) and check the URL")
    if response.status_code != 200:
        return Check("server", "fail", f"{url} answered HTTP {response.status_code}",
                     "check the URL and the API key ($GLMV_API_KEY)")
    try:
        names = [m.get("id") for m in response.json().get("data", [])]
    except (json.JSONDecodeError, AttributeError):
        names = []
    return Check("server", "ok", f"{url}: models {names}")


def _auth_headers() -> dict[str, str]:
    key = os.environ.get("GLMV_API_KEY") or os.environ.get("OPENAI_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}
