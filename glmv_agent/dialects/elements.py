"""The set-of-marks element list of the GLM-V web prompts, written from `Observation.elements`.

Environments only report elements (label, tag, text, box, attributes); how a prompt lists
them is the dialects' business, so the text is written here, once, for both GLM-4.1V and
GLM-4.5V web prompts (4.5V then escapes its quotes, as its doc shows). The agent records
the same text as the step's `observation_text` for the history and the report.
"""

from __future__ import annotations

from ..envs.base import Element, Observation

# Input types that take typed text; an <input> without a type is a text field in HTML.
_TEXT_INPUT_TYPES = ("", "text", "search", "password", "email", "tel")


def format_elements_text(elements: list[Element]) -> str:
    """The element list of the GLM-V web prompt: `[i]: <tag> "text";` entries, tab-separated.

    As in the WebVoyager setup the GLM-V web prompts follow: text fields and buttons carry
    their tag; other elements only their text (plus the aria-label when it differs); an
    element without text is listed only when it is a text field or a button, by its
    aria-label; texts of 200 characters or more are left out.
    """
    entries: list[str] = []
    for element in elements:
        tag, text = element.tag, element.text
        kind = element.attributes.get("type", "")
        aria = element.attributes.get("aria-label", "")
        if not text:
            fillable = (
                (tag == "input" and kind in _TEXT_INPUT_TYPES) or tag == "textarea"
                or (tag == "button" and kind in ("submit", "button"))
            )
            if fillable:
                entries.append(f'[{element.label}]: <{tag}> "{aria}";')
        elif len(text) < 200 and not ("<img" in text and "src=" in text):
            described = f'"{text}", "{aria}"' if aria and aria != text else f'"{text}"'
            prefix = f"<{tag}> " if tag in ("button", "input", "textarea") else ""
            entries.append(f"[{element.label}]: {prefix}{described};")
    return "\t".join(entries)


def elements_text(observation: Observation) -> str:
    """The element list of an observation: a ready-made `elements_text` when the caller
    set one (hand-built observations, replays), else written from its `elements`."""
    if observation.elements_text is not None:
        return observation.elements_text
    return format_elements_text(observation.elements or [])
