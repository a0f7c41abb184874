"""The prompts of three agent sequences, built with the project's own dialects (so they are
the real prompts), for the cache tests and benchmarks/bench_agent_steps.py:

- `pc_episode`: 5 GLM-4.1V PC steps (current screenshot + up to 4 half-size history ones);
- `phone_episode`: 5 AutoGLM-Phone turns (system prompt + past turns as text + screenshot);
- `page_sequence`: PageAgent's act, query, assert on one unchanged page (GLM-4.1V web);
- `TokenChat` / `CHAT_TURNS`: a multi-turn chat as a server client sends it, the model's
  answers carried verbatim (at the token level: a tiny random model's answers do not
  survive detokenizing and encoding again).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

import torch
from PIL import Image, ImageDraw

from glmv_agent.dialects import HistoryItem, get_dialect
from glmv_agent.envs.base import Observation
from glmv_agent.geometry import ScreenMapping
from glmv_agent.messages import Message, Part, image, message, text
from glmv_agent.page_agent import ASSERT_TASK, QUERY_TASK

Screenshot = Callable[[int], Image.Image]
STEPS = 5


def screen(index: int, size: tuple[int, int] = (320, 200)) -> Image.Image:
    """A distinct screenshot per index: a window with a moved highlight box."""
    shot = Image.new("RGB", size, (236, 238, 242))
    draw = ImageDraw.Draw(shot)
    width, height = size
    draw.rectangle((0, 0, width, height // 10), fill=(40, 60, 120))
    x = (index * width // 7) % max(1, width - width // 5)
    draw.rectangle((x, height // 3, x + width // 5, height // 3 + height // 6),
                   fill=((50 * index) % 256, 140, 200 - (30 * index) % 200))
    return shot


def _observation(platform: str, shot: Image.Image, **fields: object) -> Observation:
    return Observation(screenshot=shot, mapping=ScreenMapping(*shot.size), platform=platform,
                       **fields)


PC_ANSWERS = [
    "<think>Open the search box.</think><answer>I need to search first.\n"
    "Action: left_click(start_box='<|begin_of_box|>[500,80]<|end_of_box|>', element_info='Search')"
    "\nMemory:[]</answer>",
    "<think>Type the query.</think><answer>The box is focused.\n"
    "Action: type(content='coffee maker')\nMemory:[]</answer>",
    "<think>Press enter.</think><answer>Submit the search.\n"
    "Action: key(keys='enter')\nMemory:[]</answer>",
    "<think>Scroll.</think><answer>Look at more results.\n"
    "Action: scroll(start_box='<|begin_of_box|>[500,500]<|end_of_box|>', direction='down', step=5)"
    "\nMemory:[]</answer>",
]


def pc_episode(shot: Screenshot = screen) -> list[list[Message]]:
    """The 5 prompts of a GLM-4.1V PC episode."""
    dialect = get_dialect("glm-4.1v", "pc")
    task = "Find a black drip coffee maker under $60"
    prompts, history = [], []
    for step in range(STEPS):
        current = shot(step)
        prompts.append(dialect.build_messages(task, _observation("pc", current), history))
        if step < len(PC_ANSWERS):
            history.append(HistoryItem(step=dialect.parse(PC_ANSWERS[step]), screenshot=current))
    return prompts


PHONE_ANSWERS = [
    '<think>Open the shopping app.</think><answer>do(action="Launch", app="Taobao")</answer>',
    '<think>Tap the search box.</think><answer>do(action="Tap", element=[500,80])</answer>',
    '<think>Type the product.</think><answer>do(action="Type", text="coffee maker")</answer>',
    '<think>Look further down.</think><answer>do(action="Swipe", start=[500,800], end=[500,300])</answer>',
]


def phone_episode(shot: Screenshot = screen) -> list[list[Message]]:
    """The 5 prompts of an AutoGLM-Phone episode (multi-turn; past screenshots dropped)."""
    dialect = get_dialect("autoglm-phone", "mobile", lang="en", today=date(2025, 12, 11))
    task = "Find a black drip coffee maker under $60"
    prompts, history = [], []
    for step in range(STEPS):
        current = shot(step)
        prompts.append(dialect.build_messages(task, _observation("mobile", current, app="Taobao"),
                                              history))
        if step < len(PHONE_ANSWERS):
            history.append(HistoryItem(step=dialect.parse(PHONE_ANSWERS[step]), screenshot=current,
                                       observation_text='{"current_app": "Taobao"}'))
    return prompts


def page_sequence(shot: Screenshot = screen) -> list[tuple[str, list[Message]]]:
    """PageAgent's act, then query, then assert_that on one page (the same screenshot)."""
    dialect = get_dialect("glm-4.1v", "web")
    page = _observation("web", shot(0), url="https://shop.example/",
                        elements_text="[1]<input>Search</input>\n[2]<button>Cart</button>")
    tasks = [("act", "Type 'coffee maker' into the search box"),
             ("query", QUERY_TASK.format(question="How many items are in the cart?")),
             ("assert", ASSERT_TASK.format(statement="The cart is empty"))]
    return [(kind, dialect.build_messages(task, page, [])) for kind, task in tasks]


class TokenChat:
    """A multi-turn chat at the token level: every request is the whole conversation so far
    -- earlier turns, the model's answers verbatim, the new user turn as the engine's chat
    template renders it (images included) -- as processor tensors for `generate_inputs`."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.ids: list[int] = []
        self.pixels: list[torch.Tensor] = []
        self.grids: list[torch.Tensor] = []

    def ask(self, *content: Part) -> dict[str, Any]:
        """Add a user turn; the inputs of the whole conversation, ending in the generation prompt."""
        turn = self.engine.prepare([message("user", *content)])
        head = 0 if not self.ids else len(self.engine.tokenizer.encode("[gMASK]<sop>"))
        self.ids += turn["input_ids"][0, head:].tolist()
        if turn.get("pixel_values") is not None:
            self.pixels.append(turn["pixel_values"])
            self.grids.append(turn["image_grid_thw"])
        out: dict[str, Any] = {"input_ids": torch.tensor([self.ids])}
        if self.pixels:
            out["pixel_values"] = torch.cat(self.pixels)
            out["image_grid_thw"] = torch.cat(self.grids)
        return out

    def answer(self, token_ids: list[int]) -> None:
        """The model's answer, carried into the conversation as it was generated."""
        self.ids += token_ids


def chat_turns(shot: Screenshot = screen) -> list[tuple[Part, ...]]:
    """Four user turns, screenshots in the first and third."""
    return [(image(shot(1)), text("What is on the screen?")), (text("And next?"),),
            (image(shot(2)), text("What changed?")), (text("Thanks. Anything else?"),)]
