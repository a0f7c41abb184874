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
from dataclasses import dataclass, field
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


class WorkCounter:
    """Characters the parser has worked through, for tests that check parse work grows
    linearly with the answer's length (no timing): `scanned` by bracket matching,
    `parsed` handed to `ast.parse`. Cheap: updated once per scan or parse, not per char."""

    def __init__(self) -> None:
        self.scanned = 0
        self.parsed = 0

    def total(self) -> int:
        return self.scanned + self.parsed


WORK = WorkCounter()


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
        raise SyntaxProblem(f"action is over {MAX_ACTION_CHARS} characters long")
    WORK.parsed += len(source)
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


@dataclass
class _Scan:
    """Bracket scans that are in the same quote state at the current character."""

    depth: int = 0
    # depth a scan returns to when its opening bracket closes -> the starts waiting for it
    waiting: dict[int, list[int]] = field(default_factory=dict)


def _merge(a: _Scan, b: _Scan) -> _Scan:
    """One scan for two in the same state (the smaller one's waiting starts move over)."""
    if len(a.waiting) < len(b.waiting):
        a, b = b, a
    shift = a.depth - b.depth
    for level, starts in b.waiting.items():
        a.waiting.setdefault(level + shift, []).extend(starts)
    return a


def closing_brackets(text: str, starts: list[int], open_ch: str, close_ch: str) -> dict[int, int]:
    """For each index in `starts` (each holding `open_ch`), the index just past the
    `close_ch` that closes it, as a scan begun at that index sees it: quoted strings
    ('...' or "...", backslash escapes) are skipped, so brackets in typed text do not count.
    Starts that never close are absent.

    Scanning from every start separately is quadratic on an answer that repeats an unclosed
    call. A scan's future depends only on its quote state (outside, inside '...' or "...",
    just after a backslash), so scans in the same state are merged and carried along in one
    pass: at most five at a time, each character read a bounded number of times.
    """
    ends: dict[int, int] = {}
    todo = sorted(set(starts))
    special = re.compile("[" + re.escape("'\"\\" + open_ch + close_ch) + "]")
    scans: dict[tuple[str | None, int], _Scan] = {}  # (quote, index of an escaped char)
    next_start, visits = 0, 0
    while next_start < len(todo):
        # Nothing is waiting: jump to the next start and read on until nothing waits again.
        for match in special.finditer(text, todo[next_start]):
            i, ch = match.start(), match.group()
            while next_start < len(todo) and todo[next_start] <= i:  # (a start that is
                if todo[next_start] == i:                             # no bracket is skipped)
                    scan = scans.setdefault((None, -1), _Scan())
                    scan.waiting.setdefault(scan.depth, []).append(i)
                next_start += 1
            if len(scans) == 1 and (ch == open_ch or ch == close_ch) and (None, -1) in scans:
                # Fast path (the bulk of a long answer): one scan, outside quotes.
                visits += 1
                scan = scans[(None, -1)]
                scan.depth += 1 if ch == open_ch else -1
                if ch == close_ch:
                    for start in scan.waiting.pop(scan.depth, ()):
                        ends[start] = i + 1
                    if not scan.waiting:
                        scans = {}
                        break
                continue
            stepped: dict[tuple[str | None, int], _Scan] = {}
            for (quote, escaped), scan in scans.items():
                visits += 1
                key: tuple[str | None, int] = (quote, -1)
                if quote is None:
                    if ch == open_ch:
                        scan.depth += 1
                    elif ch == close_ch:
                        scan.depth -= 1
                        for start in scan.waiting.pop(scan.depth, ()):
                            ends[start] = i + 1
                    elif ch != "\\":
                        key = (ch, -1)
                elif escaped != i:  # (an escaped character changes nothing)
                    if ch == "\\":
                        key = (quote, i + 1)
                    elif ch == quote:
                        key = (None, -1)
                if scan.waiting:  # a scan nobody waits for is dropped
                    other = stepped.get(key)
                    stepped[key] = scan if other is None else _merge(other, scan)
            scans = stepped
            if not scans:
                break
        else:
            break  # end of text: the scans still waiting never close
    WORK.scanned += visits
    return ends


def _span(text: str, start: int, end: int) -> str:
    # Longer spans are rejected by `_parse_expression`; do not copy all of them.
    return text[start:min(end, start + MAX_ACTION_CHARS + 1)]


def find_calls(text: str, names: tuple[str, ...]) -> Iterator[tuple[int, int, str]]:
    """(start, end, source) of each `name(...)` span in `text`, in order of appearance.

    Calls inside an earlier span are its arguments (or typed text), not candidates of their
    own, and are skipped. The first call whose quotes never balance (unescaped quotes in
    typed text) ends at the last `)` of the text, so the caller can still try a lenient
    parse. Sources longer than MAX_ACTION_CHARS are cut there.
    """
    pattern = re.compile(r"(?<![\w.])(" + "|".join(re.escape(n) for n in names) + r")\(")
    matches = list(pattern.finditer(text))
    ends = closing_brackets(text, [m.end() - 1 for m in matches], "(", ")")
    last_close = text.rfind(")")
    covered, unclosed_tried = -1, False
    for match in matches:
        start, open_at = match.start(), match.end() - 1
        if start < covered:
            continue
        end = ends.get(open_at)
        if end is None:
            if unclosed_tried or last_close <= open_at:
                continue
            unclosed_tried, end = True, last_close + 1
        else:
            covered = end
        yield start, end, _span(text, start, end)


def find_dicts(text: str) -> Iterator[tuple[int, int, str]]:
    """(start, end, source) of each balanced `{...}` span in `text` that is not inside an
    earlier one (sources longer than MAX_ACTION_CHARS are cut there)."""
    starts = [m.start() for m in re.finditer(r"\{", text)]
    ends = closing_brackets(text, starts, "{", "}")
    covered = -1
    for start in starts:
        end = ends.get(start)
        if end is not None and start >= covered:
            covered = end
            yield start, end, _span(text, start, end)


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


# Any coordinate beyond this is nonsense; the check keeps huge ints away from float().
_MAX_COORDINATE = 10**9
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
            elif isinstance(item, int) and not isinstance(item, bool):
                if abs(item) > _MAX_COORDINATE:  # float() of a 400-digit int overflows
                    raise SyntaxProblem(f"coordinate {str(item)[:20]}... is far outside the grid")
                found.append(float(item))
            elif isinstance(item, float):
                found.append(item)
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
