"""Secrets never leave in any form: plain, URL-encoded, base64, in any glmv_agent.* log.

The Android runs use the real adb client against tests/support/fake_adb_server.py (no phone here),
the model is a ReplayBackend with AutoGLM-Phone answers.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import shutil
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from glmv_agent.agent import Agent
from glmv_agent.backends.replay import ReplayBackend
from glmv_agent.secrets import MASK, SecretVault, activate, deactivate, leaked_forms

from fake_adb_server import FakeAdbServer  # noqa: E402
from phones import SERIAL, fixture, make_phone  # noqa: E402

SECRET = "S3cr3t XYZ&1!"


@pytest.mark.parametrize("prefix", ["", "a", "ab", "user: "])
@pytest.mark.parametrize("suffix", ["", "x", " and more"])
def test_base64_of_any_text_holding_the_secret_is_masked(prefix: str, suffix: str) -> None:
    vault = SecretVault({"pw": SECRET})
    encoded = base64.b64encode(f"{prefix}{SECRET}{suffix}".encode()).decode()
    masked = vault.mask(f"am broadcast -a ADB_INPUT_B64 --es msg {encoded}")
    assert MASK in masked
    # Nothing left from which the secret can be decoded: every 4-character window of the
    # masked text that decodes comes from the prefix/suffix only.
    assert base64.b64encode(SECRET.encode()).decode()[:8] not in masked


@pytest.mark.parametrize("form", [quote(SECRET, safe=""), quote_plus(SECRET), SECRET,
                                  json.dumps(SECRET)[1:-1], "S3cr3t XYZ&amp;1!"])
def test_encoded_forms_are_masked(form: str) -> None:
    vault = SecretVault({"pw": SECRET})
    assert vault.mask(f"https://example.com/login?pw={form}&next=1") == \
        f"https://example.com/login?pw={MASK}&next=1"


def test_short_encoded_pieces_are_not_masked() -> None:
    assert all(len(form) >= 4 for form in leaked_forms("abcdef"))


def test_every_glmv_agent_logger_and_every_handler_is_masked() -> None:
    vault = SecretVault({"pw": SECRET})
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    child = logging.getLogger("glmv_agent.envs.some_new_module")  # created after activate
    activate(vault)
    try:
        child.debug("typed %s", SECRET)
        child.debug("url %s", quote(SECRET, safe=""))
        try:
            raise ValueError(f"bad value {SECRET}")
        except ValueError:
            child.exception("failed")
        logging.getLogger("other.library").debug("not ours: %s", "visible")
    finally:
        deactivate(vault)
        root.removeHandler(handler)
        root.setLevel(old_level)
    text = stream.getvalue()
    assert SECRET not in text and quote(SECRET, safe="") not in text
    assert text.count(MASK) == 3 and "not ours: visible" in text


def autoglm(action: str) -> str:
    return f"<think>step</think><answer>{action}</answer>"


@pytest.mark.skipif(shutil.which("adb") is None, reason="needs the adb client binary")
@pytest.mark.parametrize("keyboard", ["plain", "adbkeyboard"])
def test_adb_debug_log_and_trace_never_show_the_typed_secret(keyboard: str, tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    from glmv_agent.envs.android import AndroidEnv

    secret = "hunter2pass" if keyboard == "plain" else "пароль hunter2"  # non-ASCII: ADB Keyboard
    phone = make_phone()
    if keyboard == "adbkeyboard":
        phone.set("ime list -a -s", fixture("ime_list_adbkeyboard.txt"))
    answers = [autoglm('do(action="Type", text="{{pw}}")'), autoglm('finish(message="typed")')]
    with FakeAdbServer([phone]) as server:
        env = AndroidEnv(SERIAL, adb_server=("127.0.0.1", server.port), ime_switch_delay=0)
        caplog.set_level(logging.DEBUG)
        agent = Agent(ReplayBackend(answers), env, family="autoglm-phone", secrets={"pw": secret},
                      trace_dir=tmp_path / "trace", settle_time=0)
        result = agent.run("Type {{pw}} into the password box")
        sent = server.device(SERIAL).commands
    assert result.status == "success", result
    encoded = base64.b64encode(secret.encode()).decode()
    assert any(secret in c or encoded in c for c in sent)  # the phone did get it
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "adb" in logged and secret not in logged and encoded not in logged
    written = "\n".join(p.read_text(errors="replace") for p in (tmp_path / "trace").rglob("*")
                        if p.suffix in (".json", ".jsonl", ".html"))
    assert secret not in written and encoded not in written
    assert secret not in result.model_dump_json() and encoded not in result.model_dump_json()
