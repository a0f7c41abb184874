"""LocalBackend on the tiny random GLM-4.1V checkpoint (the 9B weights cannot run here; the
tiny checkpoint has the real layout, tokenizer and architecture at small width)."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from PIL import Image

from glmv_agent.backends.base import Backend
from glmv_agent.backends.local import LocalBackend
from glmv_agent.errors import CheckpointError, ConfigError
from glmv_agent.messages import image, message


@pytest.fixture(scope="module")
def backend(tiny_checkpoint) -> LocalBackend:
    return LocalBackend(tiny_checkpoint, device="cpu", dtype="float32", max_new_tokens=16, temperature=0)


def _messages(color: tuple[int, int, int] = (200, 40, 40)) -> list:
    shot = Image.new("RGB", (96, 64), (250, 250, 250))
    shot.paste(Image.new("RGB", (30, 20), color), (10, 10))
    return [message("system", "You are a GUI agent."), message("user", image(shot), "Click the red square.")]


def test_complete_with_a_pil_image_matches_the_engine(backend):
    assert isinstance(backend, Backend)
    text = backend.complete(_messages())
    assert isinstance(text, str) and text
    engine_result = backend.engine.generate(_messages(), do_sample=False, max_new_tokens=16)
    assert text == engine_result.text
    assert len(engine_result.token_ids) == 16 or engine_result.finish_reason == "eos"
    # The image matters: a different screenshot gives a different answer.
    assert backend.complete(_messages(color=(20, 200, 20))) != text


def test_params_map_to_generation_options(backend):
    short = backend.complete(_messages(), max_new_tokens=3)
    full = backend.complete(_messages())
    assert full.startswith(short) and len(short) < len(full)
    stop = full[len(full) // 2: len(full) // 2 + 3]
    cut = backend.complete(_messages(), stop=[stop])
    assert cut == full[: full.index(stop)]
    sampled = backend.complete(_messages(), temperature=1.0, top_k=50, extra={"seed": 5})
    assert sampled == backend.complete(_messages(), temperature=1.0, top_k=50, extra={"seed": 5})
    assert sampled != full


def test_stream_joins_to_complete(backend):
    deltas = list(backend.stream(_messages()))
    assert len(deltas) > 1
    assert "".join(deltas) == backend.complete(_messages())


def test_one_engine_serves_concurrent_threads(backend):
    expected = backend.complete(_messages())
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(backend.complete(_messages()))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [expected] * 3


def test_shares_an_existing_engine(backend):
    other = LocalBackend(backend.engine, temperature=0, max_new_tokens=16)
    assert other.engine is backend.engine
    assert other.complete(_messages()) == backend.complete(_messages())


def test_bad_params_are_config_errors(backend):
    with pytest.raises(ConfigError, match="unknown generation parameter"):
        backend.complete(_messages(), nucleus=0.2)
    with pytest.raises(ConfigError, match="top_p"):
        backend.complete(_messages(), top_p=1.5)
    with pytest.raises(ConfigError, match="top_k"):
        LocalBackend(backend.engine, top_k=-3)


def test_missing_weights_point_to_the_model_readme(tmp_path, tiny_checkpoint):
    with pytest.raises(CheckpointError, match="model/README.md"):
        LocalBackend(tmp_path / "nowhere", device="cpu")
    configs_only = tmp_path / "configs_only"
    configs_only.mkdir()
    for name in ("config.json", "tokenizer.json", "generation_config.json"):
        shutil.copy(Path(tiny_checkpoint) / name, configs_only / name)
    with pytest.raises(CheckpointError, match="no \\*.safetensors.*model/README.md"):
        LocalBackend(configs_only, device="cpu")


def test_close_releases_the_engine(tiny_checkpoint, backend):
    own = LocalBackend(backend.engine)
    own.close()
    own.close()  # idempotent
    with pytest.raises(ConfigError, match="closed"):
        own.complete(_messages())
