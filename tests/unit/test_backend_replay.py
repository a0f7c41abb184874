"""ReplayBackend: order, exhaustion, recorded calls, loading from files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from glmv_agent.backends import make_backend
from glmv_agent.backends.replay import ReplayBackend
from glmv_agent.errors import BackendError, ConfigError, InputError
from glmv_agent.messages import message

MSG = [message("user", "hi")]


def test_order_calls_and_exhaustion() -> None:
    b = ReplayBackend(["a", "b"])
    assert b.complete(MSG, temperature=0.5) == "a"
    assert list(b.stream(MSG)) == ["b"]
    assert b.remaining == 0
    assert b.calls[0] == (MSG, {"temperature": 0.5}) and b.messages == [MSG, MSG]
    with pytest.raises(BackendError, match="all 2 were used"):
        b.complete(MSG)


def test_rejects_bad_input() -> None:
    with pytest.raises(ConfigError, match="must be a string"):
        ReplayBackend(["ok", 3])  # type: ignore[list-item]
    with pytest.raises(InputError):
        ReplayBackend(["x"]).complete([])


def test_from_files(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps(["one", "two"]))
    assert ReplayBackend.from_file(tmp_path / "a.json").responses == ["one", "two"]
    (tmp_path / "b.jsonl").write_text('"one"\n\n{"response": "two\\nlines"}\n')
    assert ReplayBackend.from_file(tmp_path / "b.jsonl").responses == ["one", "two\nlines"]
    (tmp_path / "c.jsonl").write_text("not json\n")
    with pytest.raises(ConfigError, match="not a JSON list"):
        ReplayBackend.from_file(tmp_path / "c.jsonl")
    with pytest.raises(ConfigError, match="cannot read"):
        ReplayBackend.from_file(tmp_path / "missing.json")
    # make_backend recognizes replay files and passes backends through.
    b = make_backend(tmp_path / "a.json")
    assert isinstance(b, ReplayBackend) and make_backend(b) is b
    with pytest.raises(ConfigError, match="not an http"):
        make_backend(tmp_path / "nothing")
    with pytest.raises(ConfigError, match="must be a Backend"):
        make_backend(42)  # type: ignore[arg-type]
