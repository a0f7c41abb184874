"""Tokenizer, chat template and tiny tokenizer assets, checked against transformers' own
`AutoTokenizer` + `apply_chat_template` loading the very same files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from glmv_agent.errors import CheckpointError, ConfigError, InputError
from glmv_agent.glm4v.chat_template import load_chat_template, render_chat_template
from glmv_agent.glm4v.tiny_assets import GLM4V_ADDED_TOKENS, write_tokenizer_assets
from glmv_agent.glm4v.tokenizer import Glm4vTokenizer

transformers = pytest.importorskip("transformers")

VOCAB = 1024


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    directory = tmp_path_factory.mktemp("tiny_tok")
    ids = write_tokenizer_assets(directory, VOCAB)
    return directory, ids


@pytest.fixture(scope="module")
def tok(assets: tuple[Path, dict[str, int]]) -> Glm4vTokenizer:
    return Glm4vTokenizer(assets[0])


@pytest.fixture(scope="module")
def hf_tok(assets: tuple[Path, dict[str, int]]):
    return transformers.AutoTokenizer.from_pretrained(str(assets[0]))


TEXTS = [
    "Hello, world!",
    "今天天气很好，我们去公园散步吧。",
    "emoji 😀👍🏽 and flags 🇨🇳 mixed with 中文",
    "quotes: \"double\" 'single' “curly” ‘curly’ `back`",
    "code:\n\tdef f(x):\n        return x ** 2  # comment\n",
    "rare script: ᚠᛇᚻ ΑΒΓ Ж ﷺ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "  leading and trailing spaces  ",
    "",
]


def test_special_token_ids_follow_real_layout(assets, tok) -> None:
    directory, ids = assets
    base = VOCAB - 223
    for real_id, content, _ in GLM4V_ADDED_TOKENS:
        assert ids[content] == base + real_id - 151329
        assert tok.token_to_id(content) == ids[content]
    assert len(tok) == VOCAB
    assert tok.id_to_token(VOCAB - 1) is not None  # every id up to vocab_size exists


def test_real_vocab_size_gives_real_ids(tmp_path: Path) -> None:
    ids = write_tokenizer_assets(tmp_path, 151552)
    assert ids["<|endoftext|>"] == 151329
    assert ids["[gMASK]"] == 151331
    assert ids["<sop>"] == 151333
    assert ids["<|user|>"] == 151336
    assert ids["<|begin_of_image|>"] == 151339
    assert ids["<|image|>"] == 151343
    assert ids["<|video|>"] == 151344
    tok = Glm4vTokenizer(tmp_path)
    assert len(tok) == 151552
    assert tok.encode("[gMASK]<sop><|user|>\n") == [151331, 151333, 151336, tok.encode("\n")[0]]


def test_too_small_vocab_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least"):
        write_tokenizer_assets(tmp_path, 300)


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip_and_same_ids_as_transformers(tok, hf_tok, text: str) -> None:
    ids = tok.encode(text)
    assert ids == hf_tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    assert hf_tok.decode(ids) == text


def test_decode_skip_special_tokens(tok, hf_tok) -> None:
    text = "[gMASK]<sop><|assistant|>\n<think>hmm</think><answer><|begin_of_box|>42<|end_of_box|></answer>"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    kept = tok.decode(ids, skip_special_tokens=True)
    # <think>/<answer> are not special in GLM-4.1V; the box markers are.
    assert kept == "\n<think>hmm</think><answer>42</answer>"
    assert kept == hf_tok.decode(ids, skip_special_tokens=True)
    assert "<|begin_of_box|>" in tok.decode(ids, skip_special_tokens=False)


def test_decode_drops_ids_beyond_the_vocabulary_and_rejects_negative_ones(tok, hf_tok) -> None:
    # Ids past the tokenizer are a checkpoint's padding rows (tests/engine/test_padding_ids.py).
    assert tok.decode([1, VOCAB + 5]) == tok.decode([1]) == hf_tok.decode([1, VOCAB + 5])
    with pytest.raises(InputError, match="must not be negative"):
        tok.decode([1, -3])


def test_eos_ids_from_generation_config(tmp_path: Path) -> None:
    ids = write_tokenizer_assets(tmp_path, VOCAB)
    defaults = Glm4vTokenizer(tmp_path).eos_token_ids
    assert defaults == [ids["<|endoftext|>"], ids["<|user|>"], ids["<|observation|>"]]
    (tmp_path / "config.json").write_text(json.dumps({"text_config": {"eos_token_id": [7, 8]}}))
    assert Glm4vTokenizer(tmp_path).eos_token_ids == [7, 8]
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": 9}))
    assert Glm4vTokenizer(tmp_path).eos_token_ids == [9]


def test_missing_tokenizer_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="tokenizer.json"):
        Glm4vTokenizer(tmp_path)


# ----------------------------------------------------------------------------- streaming
def _stream(tok: Glm4vTokenizer, ids: list[int], skip: bool = False) -> list[str]:
    decoder = tok.stream_decoder(skip_special_tokens=skip)
    pieces = [decoder.push(i) for i in ids]
    pieces.append(decoder.flush())
    return pieces


@pytest.mark.parametrize("text", TEXTS)
def test_stream_decoder_joins_to_full_decode(tok, text: str) -> None:
    ids = tok.encode(text)
    pieces = _stream(tok, ids)
    assert "".join(pieces) == tok.decode(ids)
    assert all("\ufffd" not in p for p in pieces)


def test_stream_decoder_never_splits_a_character(tok) -> None:
    # Chinese and emoji the tiny BPE has never merged are spread over several byte tokens.
    text = "𝔘😀中"
    ids = tok.encode(text)
    assert len(ids) > len(text)  # really split across tokens
    pieces = _stream(tok, ids)
    assert [p for p in pieces if p] == ["𝔘", "😀", "中"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=VOCAB - 1), max_size=40), st.booleans())
def test_stream_decoder_random_ids(tok, ids: list[int], skip: bool) -> None:
    # Arbitrary ids include lone UTF-8 continuation bytes and specials; the join still matches.
    assert "".join(_stream(tok, ids, skip)) == tok.decode(ids, skip_special_tokens=skip)


# ----------------------------------------------------------------------------- chat template
CONVERSATIONS = {
    "text_only": [{"role": "user", "content": "Hi there"}],
    "image": [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What kind of dog is this?"}]}
    ],
    "system_multi_turn": [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "<think>x</think><answer>Hello</answer>"},
        {"role": "user", "content": [{"type": "text", "text": "看这张图"}, {"type": "image"}, {"type": "video"}]},
    ],
    "assistant_metadata": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "metadata": "get_weather", "content": "{\"city\": \"Beijing\"}"},
        {"role": "observation", "content": "sunny"},
    ],
}


@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
@pytest.mark.parametrize("gen", [True, False])
def test_template_matches_transformers(assets, hf_tok, name: str, gen: bool) -> None:
    template = load_chat_template(assets[0])
    messages = CONVERSATIONS[name]
    ours = render_chat_template(template, messages, add_generation_prompt=gen)
    theirs = hf_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
    assert ours == theirs


def test_template_renders_spec_examples(assets) -> None:
    template = load_chat_template(assets[0])
    assert render_chat_template(template, CONVERSATIONS["image"]) == (
        "[gMASK]<sop><|user|>\n<|begin_of_image|><|image|><|end_of_image|>What kind of dog is this?<|assistant|>\n"
    )
    assert render_chat_template(template, CONVERSATIONS["system_multi_turn"][:3] + [
        {"role": "user", "content": "Bye"}]) == (
        "[gMASK]<sop><|system|>\nYou are helpful.<|user|>\nHi<|assistant|>\n"
        "<think>x</think><answer>Hello</answer><|user|>\nBye<|assistant|>\n"
    )
    assert render_chat_template(template, CONVERSATIONS["assistant_metadata"][:2], add_generation_prompt=False) == (
        "[gMASK]<sop><|user|>\nweather?<|assistant|>get_weather\n{\"city\": \"Beijing\"}"
    )


def test_template_unknown_role_is_input_error(assets) -> None:
    template = load_chat_template(assets[0])
    with pytest.raises(InputError, match="unknown chat role"):
        render_chat_template(template, [{"role": "wizard", "content": "x"}])


# A GLM-4.5V-style template written for this test: /nothink on user turns and an empty
# think block in the generation prompt when thinking is off; reasoning kept after the last
# user turn only.
GLM45_STYLE = """[gMASK]<sop>
{%- set ns = namespace(last_user=-1) %}
{%- for m in messages %}{% if m.role == 'user' %}{% set ns.last_user = loop.index0 %}{% endif %}{% endfor %}
{%- for m in messages %}
{%- if m.role == 'user' %}<|user|>
{{ m.content }}{{ '/nothink' if (enable_thinking is defined and not enable_thinking and not m.content.endswith('/nothink')) else '' }}
{%- elif m.role == 'assistant' %}<|assistant|>{{ '\n' }}<think>
{{- m.reasoning_content if (loop.index0 > ns.last_user and m.reasoning_content) else '' -}}
</think>{{ '\n' }}{{ m.content }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|assistant|>
{% if enable_thinking is defined and not enable_thinking %}<think></think>
{% endif %}{% endif %}"""


@pytest.mark.parametrize("enable_thinking", [None, True, False])
def test_glm45_style_template_enable_thinking(hf_tok, enable_thinking) -> None:
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello", "reasoning_content": "greet"},
        {"role": "user", "content": "What is 2+2?"},
    ]
    ours = render_chat_template(GLM45_STYLE, messages, enable_thinking=enable_thinking)
    kwargs = {} if enable_thinking is None else {"enable_thinking": enable_thinking}
    theirs = hf_tok.apply_chat_template(
        messages, chat_template=GLM45_STYLE, tokenize=False, add_generation_prompt=True, **kwargs
    )
    assert ours == theirs
    if enable_thinking is False:
        assert ours.endswith("What is 2+2?/nothink<|assistant|>\n<think></think>\n")
        assert "Hi/nothink" in ours
    else:
        assert ours.endswith("What is 2+2?<|assistant|>\n")
    assert "<think></think>\nHello" in ours  # reasoning before the last user turn is dropped


def test_named_templates_in_tokenizer_config(tmp_path: Path) -> None:
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": [
        {"name": "default", "template": "D{{ messages[0].content }}"},
        {"name": "tool_use", "template": "T{{ messages[0].content }}"},
    ]}))
    assert load_chat_template(tmp_path) == "D{{ messages[0].content }}"
    assert load_chat_template(tmp_path, "tool_use") == "T{{ messages[0].content }}"
    with pytest.raises(CheckpointError, match="no chat template named"):
        load_chat_template(tmp_path, "missing")


def test_template_helpers_and_sandbox() -> None:
    out = render_chat_template(
        "{{ messages[0].content | tojson }}|{{ strftime_now('%Y') | length }}", [{"role": "user", "content": "<é>"}]
    )
    assert out == '"<é>"|4'
    with pytest.raises(InputError, match="rejected"):
        render_chat_template("{{ raise_exception('nope') }}", [{"role": "user", "content": "x"}])
    # The sandbox refuses attribute tricks instead of running them.
    with pytest.raises(Exception):
        render_chat_template("{{ messages.__class__.__mro__ }}{{ ''.__class__.__subclasses__() }}",
                             [{"role": "user", "content": "x"}])


def test_preprocessor_configs_load_in_transformers(assets) -> None:
    import importlib

    from glmv_agent.glm4v.image_processing import Glm4vImageProcessor
    from glmv_agent.glm4v.video_processing import Glm4vVideoProcessor

    pil = importlib.import_module("transformers.models.glm4v.image_processing_pil_glm4v")
    theirs = pil.Glm4vImageProcessorPil.from_pretrained(str(assets[0]))
    ours = Glm4vImageProcessor.from_pretrained(assets[0]).config
    assert (theirs.size.shortest_edge, theirs.size.longest_edge) == (ours.min_pixels, ours.max_pixels) == (12544, 9633792)
    assert (theirs.patch_size, theirs.temporal_patch_size, theirs.merge_size) == (14, 2, 2)
    video = Glm4vVideoProcessor.from_pretrained(assets[0]).config
    assert (video.max_pixels, video.fps, video.sampling) == (47040000, 2.0, "glm41v")


def test_glm45_style_keeps_reasoning_after_last_user(hf_tok) -> None:
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello", "reasoning_content": "greet back"},
    ]
    ours = render_chat_template(GLM45_STYLE, messages, add_generation_prompt=False)
    assert ours == hf_tok.apply_chat_template(messages, chat_template=GLM45_STYLE, tokenize=False)
    assert ours.endswith("<|assistant|>\n<think>greet back</think>\nHello")
