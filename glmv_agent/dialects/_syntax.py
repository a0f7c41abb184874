"""Safe parsing of the action strings GLM models write. Never `eval`.

Models write Python-call-like actions (`left_click(start_box='[100,200]')`,
`do(action="Tap", element=[500,300])`) and Python- or JSON-style dicts
(`{'action_type': 'click', 'box_2d': [[1,2,3,4]], 'override': True}`). We parse them with
`ast.parse` and walk the tree accepting literals only: strings, numbers, booleans, None,
lists, tuples, dicts, unary minus, and the JSON names `true`/`false`/`null`. Anything else
(names, attribute access, calls inside arguments, operators) is rejected.

The module also splits a raw answer into its thinking and answer parts, strips the
grounding-box markers and locates the first parseable call or dict in free text.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Iterator
from typing import Any

from ..actions import Box, Point, Target
from ..geometry import model_to_normalized

# Longest action string we hand to `ast.parse`; real actions are a few hundred characters.
MAX_ACTION_CHARS = 20_000

_JSON_NAMES = {"true": True, "false": False, "null": None, "True": True, "False": False,
               "None": None}

# Special tokens GLM-V emits around grounded coordinates; the docs call the opening one
# `<|start_of_box|>` while the tokenizer's is `<|begin_of_box|>`: accept both.
_BOX_MARKERS = re.compile(r"<\|(?:begin|start|end)_of_box\|>")
# Tokens after which nothing belongs to the answer.
_STOP_TOKENS = ("<|user|>", "<|endoftext|>", "<|observation|>", "<|assistant|>")


class SyntaxProblem(ValueError):
    """An action string is not a literal-only call or literal (message says why)."""


def strip_box_markers(text: str) -> str:
    return _BOX_MARKERS.sub("", text)


def split_response(text: str) -> tuple[str | None, str]:
    """(thinking, answer) of a raw model answer.

    Accepts `<think>..</think><answer>..</answer>`, a missing `<think>` or missing closing
    tags, no tags at all (then the whole text is the answer), and cuts at chat special
    tokens the server did not strip.
    """
    for token in _STOP_TOKENS:
        cut = text.find(token)
        if cut >= 0:
            text = text[:cut]
    thinking: str | None = None
    rest = text
    close = rest.find("</think>")
    if close >= 0:
        thinking = rest[:close]
        rest = rest[close + len("</think>"):]
    else:
        open_answer = rest.find("<answer>")
        if "<think>" in rest and open_answer >= 0:
            thinking = rest[:open_answer]
            rest = rest[open_answer:]
        elif "<think>" in rest:
            # Thinking never closed and no answer tag: the whole thing is thinking, but an
            # action may still be inside; callers search `rest` for it.
            thinking = rest
    if thinking is not None:
        thinking = thinking.replace("<think>", "").strip() or None
    start = rest.find("<answer>")
    if start >= 0:
        rest = rest[start + len("<answer>"):]
    end = rest.find("</answer>")
    if end >= 0:
        rest = rest[:end]
    rest = rest.replace("<think>", "")
    return thinking, strip_box_markers(rest).strip()


def _escape_raw_newlines(source: str) -> str:
    """Escape newlines, tabs and other control characters inside quoted strings for `ast`."""
    out: list[str] = []
    quote: str | None = None
    i = 0
    while i < len(source):
        ch = source[i]
        if quote is None:
            if ch in "'\"":
                quote = ch
            out.append(ch)
        elif ch == "\\" and i + 1 < len(source):
            out.append(source[i:i + 2])
            i += 2
            continue
        elif ch == quote:
            quote = None
            out.append(ch)
        elif ch in "\n\r\t":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[ch])
        elif ord(ch) < 0x20:
            out.append(f"\\x{ord(ch):02x}")  # other control characters, NUL included
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def _parse_expression(source: str) -> ast.expr:
    if len(source) > MAX_ACTION_CHARS:
        raise SyntaxProblem(f"action is {len(source)} characters long; at most {MAX_ACTION_CHARS}")
    try:
        return ast.parse(_escape_raw_newlines(source.strip()), mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError) as exc:
        raise SyntaxProblem(f"not valid call/literal syntax: {exc}") from None


def literal(node: ast.AST) -> Any:
    """The Python value of a literal-only expression node."""
    if isinstance(node, ast.Constant):
        if isinstance(node.value, (str, int, float, bool)) or node.value is None:
            if isinstance(node.value, float) and not math.isfinite(node.value):
                raise SyntaxProblem("numbers must be finite")
            return node.value
        raise SyntaxProblem(f"unsupported constant {node.value!r}")
    if isinstance(node, ast.Name) and node.id in _JSON_NAMES:
        return _JSON_NAMES[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = literal(node.operand)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SyntaxProblem("a sign can only precede a number")
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, (ast.List, ast.Tuple)):
        return [literal(element) for element in node.elts]
    if isinstance(node, ast.Dict):
        result: dict[Any, Any] = {}
        for key, value in zip(node.keys, node.values):
            if key is None:
                raise SyntaxProblem("dict unpacking (**) is not allowed")
            k = literal(key)
            if not isinstance(k, (str, int, float, bool)) and k is not None:
                raise SyntaxProblem("dict keys must be strings or numbers")
            result[k] = literal(value)
        return result
    raise SyntaxProblem(f"only literals are allowed, found {type(node).__name__}")


def parse_literal(source: str) -> Any:
    """A literal (dict, list, string, number) written in Python or JSON style."""
    try:
        return literal(_parse_expression(source))
    except RecursionError:
        raise SyntaxProblem("literal is nested too deeply") from None


def parse_call(source: str) -> tuple[str, list[Any], dict[str, Any]]:
    """(function name, positional args, keyword args) of `name(arg, key=value, ...)`."""
    node = _parse_expression(source)
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        raise SyntaxProblem("expected a single call like name(key='value')")
    try:
        args = [literal(a) for a in node.args]
        kwargs: dict[str, Any] = {}
        for keyword in node.keywords:
            if keyword.arg is None:
                raise SyntaxProblem("**kwargs are not allowed")
            kwargs[keyword.arg] = literal(keyword.value)
    except RecursionError:
        raise SyntaxProblem("arguments are nested too deeply") from None
    return node.func.id, args, kwargs


def balanced_end(text: str, start: int, open_ch: str, close_ch: str) -> int | None:
    """Index just past the bracket matching `text[start]`, skipping quoted strings.

    Quotes inside the span are tracked so brackets in typed text do not confuse it.
    Returns None when the span never closes.
    """
    depth = 0
    quote: str | None = None
    i = start
    while i < len(text):
        ch = text[i]
        if quote is not None:
            if ch == "\\":
                i += 2
                continue
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == open_ch:
            depth += 1
        elif ch == close_ch:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


def find_calls(text: str, names: tuple[str, ...]) -> Iterator[tuple[int, int, str]]:
    """(start, end, source) of each `name(...)` span in `text`, in order of appearance.

    A span whose quotes never balance (unescaped quotes in typed text) ends at the last
    `)` after the call, so the caller can still try a lenient parse.
    """
    pattern = re.compile(r"(?<![\w.])(" + "|".join(re.escape(n) for n in names) + r")\(")
    for match in pattern.finditer(text):
        open_at = match.end() - 1
        end = balanced_end(text, open_at, "(", ")")
        if end is None:
            last = text.rfind(")")
            if last <= open_at:
                continue
            end = last + 1
        yield match.start(), end, text[match.start():end]


def find_dicts(text: str) -> Iterator[tuple[int, int, str]]:
    """(start, end, source) of each balanced `{...}` span in `text`."""
    i = text.find("{")
    while i >= 0:
        end = balanced_end(text, i, "{", "}")
        if end is not None:
            yield i, end, text[i:end]
        i = text.find("{", i + 1)


def split_keys(combo: str) -> list[str]:
    """'ctrl+shift+t' -> ['ctrl', 'shift', 't']; 'ctrl++' -> ['ctrl', '+']; 'ctrl c' too."""
    combo = combo.strip().lower()
    plus_key = combo == "+" or combo.endswith("++")
    if plus_key:
        combo = combo[:-1].rstrip("+").strip()
    keys = [part.strip() for part in combo.split("+") if part.strip()]
    # Space-separated combos ('ctrl c') are written by some checkpoints too.
    if len(keys) == 1 and " " in keys[0] and not plus_key:
        keys = keys[0].split()
    return keys + (["+"] if plus_key else [])


_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def numbers(value: Any) -> list[float]:
    """Flat list of finite numbers from `[x,y]`, `[[x1,y1,x2,y2]]`, `'[x, y]'` or `'(x,y)'`."""
    if isinstance(value, str):
        text = value.strip()
        if not re.fullmatch(r"[\[\(\s]*[-+]?\d+(?:\.\d+)?(?:\s*,\s*[-+]?\d+(?:\.\d+)?)*[\]\)\s]*", text):
            raise SyntaxProblem(f"coordinates must look like [x,y] or [x1,y1,x2,y2], got {value!r}")
        found = [float(n) for n in _NUMBER.findall(text)]
    elif isinstance(value, list):
        found = []
        for item in value:
            if isinstance(item, list):
                found.extend(numbers(item))
            elif isinstance(item, (int, float)) and not isinstance(item, bool):
                found.append(float(item))
            elif isinstance(item, str):
                found.extend(numbers(item))
            else:
                raise SyntaxProblem(f"coordinates must be numbers, got {item!r}")
    else:
        raise SyntaxProblem(f"coordinates must be a list like [x,y], got {value!r}")
    if any(not math.isfinite(n) for n in found):
        raise SyntaxProblem("coordinates must be finite numbers")
    return found


def to_target(value: Any, grid_max: int) -> Target:
    """A point (2 numbers) or box (4 numbers) on a 0..grid_max grid as a normalized Target.

    Values are clamped inside the screen; box corners given in the wrong order are sorted.
    """
    found = numbers(value)
    norm = [model_to_normalized(n, grid_max) for n in found]
    if len(norm) == 2:
        return Target(point=Point(x=norm[0], y=norm[1]))
    if len(norm) == 4:
        x1, x2 = sorted((norm[0], norm[2]))
        y1, y2 = sorted((norm[1], norm[3]))
        return Target(box=Box(x1=x1, y1=y1, x2=x2, y2=y2))
    raise SyntaxProblem(
        f"expected 2 numbers [x,y] or 4 numbers [x1,y1,x2,y2] on the 0-{grid_max} grid, "
        f"got {len(found)}"
    )
