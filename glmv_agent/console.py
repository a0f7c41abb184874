"""What the command line shows a person: progress lines, the streamed answer, prompts.

Shared by the `glmv-agent` commands, the terminal assistant and the demo, so none of them
imports another to print. Model and page text reaches the terminal escaped
(`terminal_safe`): an answer cannot move the cursor, clear the screen or reorder text.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable
from typing import Any

# What a terminal would act on instead of showing: C0 controls except newline and tab, DEL,
# C1 controls, and the bidi embeddings/overrides/isolates that reorder the text after them.
_TERMINAL_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def terminal_safe(text: str) -> str:
    """`text` with everything that would drive the terminal (escape sequences, carriage
    returns, bells, bidi overrides) written as escapes such as `\\x1b`: model and page
    text reaches the screen as text. Newlines and tabs are kept."""
    # ascii() writes Python's escape for the character: \r, \x1b, \u202e ...
    return _TERMINAL_UNSAFE.sub(lambda m: ascii(m.group())[1:-1], text.replace("\r\n", "\n"))


def say(text: str = "") -> None:
    """The CLI's user-facing output (the library itself only logs)."""
    print(terminal_safe(text), flush=True)


class TerminalSafeFormatter(logging.Formatter):
    """Log lines quote model and page text too; they reach the terminal escaped as well."""

    def format(self, record: logging.LogRecord) -> str:
        return terminal_safe(super().format(record))



def make_confirm(policy: str) -> Callable[..., bool]:
    def confirm(action: Any, step: Any) -> bool:
        if policy == "allow":
            return True
        if policy == "deny" or not sys.stdin.isatty():
            say(f"  ! sensitive action denied ({policy}): {describe(action)}")
            return False
        reason = getattr(action, "reason", None) or "sensitive action"
        answer = input(f"  ? {reason}: {describe(action)} -- allow? [y/N] ")
        return answer.strip().lower() in ("y", "yes")
    return confirm


def take_over_prompt(message: str) -> None:
    say(f"  >> The model asks you to take over: {message}")
    if sys.stdin.isatty():
        input("     Press Enter when done... ")


def describe(action: Any) -> str:
    """One line for an action or an action dict (the report's wording)."""
    from .report import describe_action

    return describe_action(action if isinstance(action, dict) else action.to_dict())


def format_record(record: Any, show_thinking: bool) -> list[str]:
    """The progress lines for one finished step."""
    action = describe(record.action) if record.action else "(no action)"
    total = record.timings.get("total", 0.0)
    lines = [f"step {record.index:>3}  {action}  [{record.outcome}] {total:.1f}s"
             + (f"  {record.detail}" if record.detail else "")]
    if show_thinking and record.step and record.step.get("thinking"):
        lines += [f"        | {line}" for line in record.step["thinking"].strip().splitlines()]
    return lines


def print_record(record: Any, show_thinking: bool, output: Callable[[str], None] = say) -> None:
    for line in format_record(record, show_thinking):
        output(line)


class StreamPrinter:
    """Prints the model's answer as it streams, each line indented under its step."""

    def __init__(self) -> None:
        self.at_line_start = True

    def __call__(self, delta: str) -> None:
        # Lines end at "\n" only (str.splitlines would also cut at \r, \x0b, \x1c ...).
        for piece in re.split(r"(?<=\n)", terminal_safe(delta)):
            if not piece:
                continue
            if self.at_line_start:
                sys.stdout.write("        | ")
            sys.stdout.write(piece.rstrip("\n"))
            self.at_line_start = piece.endswith("\n")
            if self.at_line_start:
                sys.stdout.write("\n")
        sys.stdout.flush()

    def end(self) -> None:
        if not self.at_line_start:
            sys.stdout.write("\n")
            self.at_line_start = True
