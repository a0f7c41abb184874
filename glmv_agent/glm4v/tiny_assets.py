"""Tokenizer and preprocessor files for tiny test checkpoints.

`write_tokenizer_assets(directory, vocab_size)` writes the non-weight files of a GLM-4.1V
checkpoint directory: a real byte-level BPE `tokenizer.json` (trained here with the
`tokenizers` library on a small built-in English/Chinese/code corpus, so any Unicode text
round-trips), `tokenizer_config.json`, our own GLM-4.1V-Thinking `chat_template.jinja`,
`preprocessor_config.json` and `video_preprocessor_config.json`.

The special tokens sit at the same offsets from the end of the vocabulary as in the real
GLM-4 tokenizer: id `vocab_size - 223 + (real_id - 151329)`, so `vocab_size=151552` yields the
real ids (`<|endoftext|>` 151329 ... `<|video|>` 151344). The ids of `<think>`, `</think>`,
`<answer>`, `</answer>`, `<|begin_of_box|>` and `<|end_of_box|>` in the real 4.1V tokenizer
are not verified; we put them right after `<|video|>` (151345..151350). As in GLM-4.1V,
`<think>`/`<answer>` tags are *not* special (they survive `skip_special_tokens=True`).
"""

from __future__ import annotations

import json
import logging
from importlib import resources
from pathlib import Path

from ..errors import ConfigError

logger = logging.getLogger(__name__)

# Real GLM-4 layout: regular BPE ids 0..151328, then 223 slots for added tokens.
REAL_VOCAB_SIZE = 151552
REAL_FIRST_SPECIAL_ID = 151329
SPECIAL_SLOTS = REAL_VOCAB_SIZE - REAL_FIRST_SPECIAL_ID  # 223
# 256 byte-level symbols plus a few dozen merges must fit below the special slots.
MIN_VOCAB_SIZE = 512

# (real id, token, special?) -- "special" tokens are dropped by skip_special_tokens.
GLM4V_ADDED_TOKENS: list[tuple[int, str, bool]] = [
    (151329, "<|endoftext|>", True),
    (151330, "[MASK]", True),
    (151331, "[gMASK]", True),
    (151332, "[sMASK]", True),
    (151333, "<sop>", True),
    (151334, "<eop>", True),
    (151335, "<|system|>", True),
    (151336, "<|user|>", True),
    (151337, "<|assistant|>", True),
    (151338, "<|observation|>", True),
    (151339, "<|begin_of_image|>", True),
    (151340, "<|end_of_image|>", True),
    (151341, "<|begin_of_video|>", True),
    (151342, "<|end_of_video|>", True),
    (151343, "<|image|>", True),
    (151344, "<|video|>", True),
    # Our choice of ids (UNVERIFIED for the real checkpoint, which is read at load time).
    (151345, "<think>", False),
    (151346, "</think>", False),
    (151347, "<answer>", False),
    (151348, "</answer>", False),
    (151349, "<|begin_of_box|>", True),
    (151350, "<|end_of_box|>", True),
]

# GPT-4-style split: contractions, letter runs, 1-3 digit groups, punctuation runs, newlines.
_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Small training corpus: enough for common English, Chinese and code merges.
_CORPUS = [
    "The quick brown fox jumps over the lazy dog. What kind of dog is this?",
    "Click the search button, then type the query and press enter to continue.",
    "Open the settings app, scroll down and tap on the Wi-Fi option.",
    "You are a helpful assistant that operates a computer by looking at screenshots.",
    "Describe this image. The image shows a cat sitting on a wooden table near a window.",
    "Please answer the question: how many people are in the picture? There are three.",
    "I think the answer is in the top left corner of the screen, next to the menu.",
    "今天天气很好，我们去公园散步吧。",
    "请点击屏幕右上角的设置按钮，然后选择网络选项。",
    "这张图片里有一只猫坐在桌子上，旁边有一杯咖啡。",
    "打开微信，搜索联系人，发送消息：你好，明天见！",
    "我认为答案是第三个选项，因为它最符合题目的要求。",
    "中文、English 和 code 混合的文本也应该能够正确地编码和解码。",
    "def click(x: int, y: int) -> None:\n    pyautogui.click(x, y)\n",
    "for i in range(10):\n    print(i * 2)\n",
    "import json\nwith open('data.json') as f:\n    data = json.load(f)\n",
    '{"action": "click", "coordinate": [500, 300], "text": "hello world"}',
    "if (x > 0 && y < 100) { return x + y; } else { return 0; }",
    "<think>The user wants to open the browser.</think><answer>do(action=\"Launch\", app=\"Chrome\")</answer>",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000 2024 3.14 42 999",
    "Emoji and symbols: 😀 👍 ✓ → ← © ° € £ ¥ — “quoted” ‘single’",
]


def _train_tokenizer_json(num_regular: int) -> dict:
    """Train a byte-level BPE with at most `num_regular` tokens; return its JSON dict."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=num_regular,
        min_frequency=1,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS * 3, trainer=trainer)
    return json.loads(tokenizer.to_str())


def build_tokenizer_json(vocab_size: int) -> tuple[dict, dict[str, int]]:
    """The `tokenizer.json` content for `vocab_size`, and the special-token ids by name."""
    if not isinstance(vocab_size, int) or vocab_size < MIN_VOCAB_SIZE:
        raise ConfigError(
            f"vocab_size={vocab_size!r} is too small for a GLM tokenizer: it needs 256 byte "
            f"tokens, some merges and {SPECIAL_SLOTS} special-token slots; use at least {MIN_VOCAB_SIZE}"
        )
    num_regular = vocab_size - SPECIAL_SLOTS
    data = _train_tokenizer_json(num_regular)
    vocab: dict[str, int] = data["model"]["vocab"]
    # Pad the regular part so ids 0..num_regular-1 all exist (unreachable filler entries).
    next_id = len(vocab)
    while next_id < num_regular:
        vocab[f"<|unused_{next_id}|>"] = next_id
        next_id += 1
    data["model"]["vocab"] = vocab

    named = {real_id: (content, special) for real_id, content, special in GLM4V_ADDED_TOKENS}
    added: list[dict] = []
    ids: dict[str, int] = {}
    for slot in range(SPECIAL_SLOTS):
        token_id = num_regular + slot
        content, special = named.get(REAL_FIRST_SPECIAL_ID + slot, (f"<|reserved_{slot}|>", True))
        if REAL_FIRST_SPECIAL_ID + slot in named:
            ids[content] = token_id
        added.append(
            {
                "id": token_id,
                "content": content,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": special,
            }
        )
    data["added_tokens"] = added
    return data, ids


def _template_text() -> str:
    return resources.files("glmv_agent.glm4v").joinpath("templates/glm41v_thinking.jinja").read_text("utf-8")


def write_tokenizer_assets(directory: str | Path, vocab_size: int) -> dict[str, int]:
    """Write tokenizer + preprocessor files into `directory`; return special-token ids by name."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    data, ids = build_tokenizer_json(vocab_size)
    (out / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")

    added_decoder = {
        str(entry["id"]): {k: entry[k] for k in ("content", "single_word", "lstrip", "rstrip", "normalized", "special")}
        for entry in data["added_tokens"]
        if entry["content"] in ids
    }
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "added_tokens_decoder": added_decoder,
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "padding_side": "left",
        "clean_up_tokenization_spaces": False,
        "do_lower_case": False,
        "remove_space": False,
        "model_max_length": 65536,
        "model_input_names": ["input_ids", "attention_mask"],
    }
    _write_json(out / "tokenizer_config.json", tokenizer_config)
    (out / "chat_template.jinja").write_text(_template_text(), encoding="utf-8")

    common = {
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "merge_size": 2,
        "patch_size": 14,
        "temporal_patch_size": 2,
        "resample": 3,  # PIL bicubic
        "rescale_factor": 0.00392156862745098,
    }
    _write_json(
        out / "preprocessor_config.json",
        {
            **common,
            "image_processor_type": "Glm4vImageProcessor",
            "processor_class": "Glm4vProcessor",
            "size": {"shortest_edge": 12544, "longest_edge": 9633792},
        },
    )
    _write_json(
        out / "video_preprocessor_config.json",
        {
            **common,
            "video_processor_type": "Glm4vVideoProcessor",
            "processor_class": "Glm4vProcessor",
            "size": {"shortest_edge": 12544, "longest_edge": 47040000},
            "fps": 2,
            "max_duration": 300,
            "do_sample_frames": True,
        },
    )
    logger.info("wrote tokenizer assets (vocab %d) to %s", vocab_size, out)
    return ids


def _write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
