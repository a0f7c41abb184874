"""Add your own action type: a pydantic model, a handler on the environment, a parser rule.

Shows the three extension points:

1. `register_action`: a new action class (`type` + fields) that round-trips through JSON
   and the trace like the built-in ones (here `screenshot_note`: save the current
   screenshot with a note into a folder).
2. `env.register_handler("screenshot_note", handler)`: how the environment executes it;
   the agent's policy now lists it among the environment's supported actions.
3. A dialect subclass that reads it from the model's answer (`Action: Note; [text]`),
   falling back to the family's own parser for everything else. The model was not trained
   on this action, so the task text tells it how to write it.

Run it here, without weights (scripted answers, real browser, on the bundled demo app):

    python examples/custom_action.py --replay --notes-dir /tmp/notes

With a real model:

    python examples/custom_action.py --base-url http://127.0.0.1:8000/v1 --model-name glm-4.1v
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Literal

from _common import add_model_args, model_from_args

from glmv_agent import Agent, WebEnv, register_action
from glmv_agent.actions import BaseAction, action_from_json
from glmv_agent.demo import demo_dir, serve_directory
from glmv_agent.dialects.base import Step
from glmv_agent.dialects.glm41v import GLM41VDialect
from glmv_agent.envs.base import ActionOutcome, Environment, Observation


@register_action
class ScreenshotNote(BaseAction):
    """Save the current screenshot with a note (a custom action type)."""

    type: Literal["screenshot_note"] = "screenshot_note"
    note: str


class NoteTakingDialect(GLM41VDialect):
    """GLM-4.1V's web dialect plus one extra action: `Note; [text]`."""

    _NOTE = re.compile(r"(?:^|\n)\s*Action\s*:\s*Note\s*;\s*\[(.*?)\]", re.S)

    def parse(self, text: str) -> Step:
        match = self._NOTE.search(text)
        if match is None:
            return super().parse(text)  # every built-in action, with its error messages
        return Step(action=ScreenshotNote(note=match.group(1).strip()), raw=text,
                    extra={"action_text": match.group(0).strip()})


def note_handler(folder: Path):
    """The handler: what executing a `screenshot_note` does in this environment."""
    folder.mkdir(parents=True, exist_ok=True)

    def handle(env: Environment, action: BaseAction, observation: Observation) -> ActionOutcome:
        assert isinstance(action, ScreenshotNote)
        index = len(list(folder.glob("note-*.png"))) + 1
        image_path = folder / f"note-{index}.png"
        observation.screenshot.save(image_path)
        (folder / f"note-{index}.txt").write_text(
            f"{action.note}\nurl: {observation.url}\n", encoding="utf-8")
        return ActionOutcome(action=action, detail=f"saved {image_path.name}")

    return handle


def scripted(thought: str, action: str) -> str:
    return (f"<think>{thought}</think><answer>Thought: {thought}\nAction: {action}\n"
            "Memory_Updated: {}</answer>")


SCRIPTED = [  # for --replay; [0] is the demo app's search box
    scripted("I should note the home page first.", "Note; [Pagebound Books home page]"),
    scripted("Now search for Dune.", "Type [0]; [Dune]"),
    scripted("Note the results.", "Note; [Search results for Dune]"),
    scripted("Both pages are noted.", "ANSWER; <content>Took 2 notes</content>"),
]
TASK = ("Take a note of the home page, search for Dune and take a note of the results. "
        "To take a note, use the action 'Note; [what the note says]'.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(parser)
    parser.add_argument("--notes-dir", type=Path, default=Path("notes"))
    parser.add_argument("--trace-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    model = model_from_args(parser, args, scripted=SCRIPTED)

    # The custom action is ordinary data: JSON in, the same class out.
    example = action_from_json('{"type": "screenshot_note", "note": "hello"}')
    print(f"registered: {type(example).__name__} {example.to_json()}")

    with serve_directory(demo_dir()) as site:
        with WebEnv.launch(site + "index.html", set_of_marks=True) as env:
            env.register_handler("screenshot_note", note_handler(args.notes_dir))
            print(f"environment supports screenshot_note: {env.supports('screenshot_note')}")
            agent = Agent(model, env, dialect=NoteTakingDialect("web"), max_steps=6,
                          trace_dir=args.trace_dir)
            result = agent.run(TASK)
    for record in result.steps:
        print(f"step {record.index}: {(record.action or {}).get('type')} -> {record.outcome}"
              f"{' (' + record.detail + ')' if record.detail else ''}")
    notes = sorted(p.name for p in args.notes_dir.glob("note-*.txt"))
    print(f"status: {result.status}; notes: {', '.join(notes)}")
    return 0 if result.status in ("success", "answered") else 1


if __name__ == "__main__":
    sys.exit(main())
