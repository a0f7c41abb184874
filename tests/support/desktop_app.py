"""A real Tk application for the desktop-environment tests.

Run as `python tests/support/desktop_app.py` on an X display. It fills the screen with widgets at
known places and writes one JSON object per line to stdout: first
`{"event": "ready", "screen": [w, h], "widgets": {name: [x, y, w, h]}, "colors": {...}}`
(root-window pixel geometry), then one line per thing that happens (button presses with
the widget and root coordinates, double clicks, pointer entering the hover zone, a dragged
canvas box, wheel scrolls with the resulting view, entry text changes, key presses).
"""

from __future__ import annotations

import json
import sys
import tkinter as tk

SWATCH_COLOR = "#12ab34"
BOX_COLOR = "#d02020"
SLOW_FINAL_LEVEL = 10  # the gray the "slow" pad ends on


def emit(**event: object) -> None:
    sys.stdout.write(json.dumps(event, ensure_ascii=False) + "\n")
    sys.stdout.flush()


class App:
    def __init__(self, root: tk.Tk) -> None:
        self.root = root
        width, height = root.winfo_screenwidth(), root.winfo_screenheight()
        self.screen = (width, height)
        root.geometry(f"{width}x{height}+0+0")
        root.configure(background="#f0f0f0")
        self.widgets: dict[str, tk.Widget] = {}

        def place(name: str, widget: tk.Widget, fx: float, fy: float, fw: float, fh: float) -> None:
            widget.place(x=int(fx * width), y=int(fy * height), width=int(fw * width), height=int(fh * height))
            self.widgets[name] = widget

        # Click pads: record every button press, and double clicks, with root coordinates.
        for name, fx, fy, color in (
            ("pad_a", 0.05, 0.05, "#c0c0ff"), ("pad_b", 0.78, 0.86, "#ffc0c0"), ("pad_c", 0.45, 0.05, "#c0ffc0"),
        ):
            pad = tk.Frame(root, background=color)
            place(name, pad, fx, fy, 0.15, 0.1)
            pad.bind("<ButtonPress>", lambda e, n=name: emit(event="press", widget=n, button=e.num,
                                                              x=e.x_root, y=e.y_root))
            pad.bind("<Double-Button-1>", lambda e, n=name: emit(event="double", widget=n))

        # Fades from light to dark gray over 400 ms after a press, 10 ms a step: an action
        # whose effect is still moving on screen right after the click.
        slow = tk.Frame(root, background="#fafafa")
        place("slow", slow, 0.05, 0.82, 0.15, 0.1)
        slow.bind("<ButtonPress>", lambda e: self._fade(slow, 250))

        hover = tk.Frame(root, background="#ffffc0")
        place("hover", hover, 0.25, 0.05, 0.12, 0.1)
        hover.bind("<Enter>", lambda e: emit(event="enter", widget="hover", x=e.x_root, y=e.y_root))

        self.text_var = tk.StringVar(master=root)
        entry = tk.Entry(root, textvariable=self.text_var, font=("DejaVu Sans", 14))
        place("entry", entry, 0.05, 0.22, 0.45, 0.06)
        self.text_var.trace_add("write", lambda *_: emit(event="entry", value=self.text_var.get()))
        # Like most desktop toolkits (Tk's own default is emacs-style line start).
        entry.bind("<Control-a>", self._select_all)

        canvas = tk.Canvas(root, background="white", highlightthickness=0, borderwidth=0)
        place("canvas", canvas, 0.05, 0.36, 0.40, 0.40)
        self.canvas = canvas
        self.box = canvas.create_rectangle(20, 20, 80, 60, fill=BOX_COLOR, outline="")
        canvas.create_rectangle(200, 100, 300, 160, fill=SWATCH_COLOR, outline="")
        canvas.tag_bind(self.box, "<ButtonPress-1>", self._drag_start)
        canvas.tag_bind(self.box, "<B1-Motion>", self._drag_move)
        canvas.tag_bind(self.box, "<ButtonRelease-1>", self._drag_end)
        self._drag_from: tuple[int, int] | None = None

        listbox = tk.Listbox(root, font=("DejaVu Sans", 10))
        for index in range(300):
            listbox.insert("end", f"item {index}")
        place("listbox", listbox, 0.55, 0.22, 0.15, 0.45)
        self.wheel = {"up": 0, "down": 0, "left": 0, "right": 0}
        listbox.bind("<Button-4>", lambda e: self._wheel(listbox, "up"), add="+")
        listbox.bind("<Button-5>", lambda e: self._wheel(listbox, "down"), add="+")

        text = tk.Text(root, wrap="none", font=("DejaVu Sans Mono", 10))
        for row in range(40):
            text.insert("end", f"{row:02d} " + "abcdefghij" * 60 + "\n")
        place("text", text, 0.75, 0.22, 0.2, 0.45)
        # Tk 8.6 delivers horizontal wheel buttons 6/7 as Shift-Button-4/5.
        text.bind("<Shift-Button-4>", lambda e: self._wheel(text, "left"), add="+")
        text.bind("<Shift-Button-5>", lambda e: self._wheel(text, "right"), add="+")

        # On the toplevel's tag, not "all", where Tk's own <Alt-Key> menu binding would win.
        root.bind("<KeyPress>", lambda e: emit(event="key", keysym=e.keysym, state=e.state,
                                                   char=e.char), add="+")
        root.after(50, self._ready)

    def _fade(self, widget: tk.Frame, level: int) -> None:
        widget.configure(background=f"#{level:02x}{level:02x}{level:02x}")
        if level > SLOW_FINAL_LEVEL:
            self.root.after(10, lambda: self._fade(widget, max(SLOW_FINAL_LEVEL, level - 6)))
        else:
            emit(event="faded", widget="slow")

    def _select_all(self, event: tk.Event) -> str:
        event.widget.select_range(0, "end")
        event.widget.icursor("end")
        return "break"

    def _drag_start(self, event: tk.Event) -> None:
        self._drag_from = (event.x, event.y)

    def _drag_move(self, event: tk.Event) -> None:
        if self._drag_from is not None:
            self.canvas.move(self.box, event.x - self._drag_from[0], event.y - self._drag_from[1])
            self._drag_from = (event.x, event.y)

    def _drag_end(self, event: tk.Event) -> None:
        self._drag_move(event)
        self._drag_from = None
        self.root.update_idletasks()
        emit(event="dragged", box=self._box_root())

    def _box_root(self) -> list[int]:
        x1, y1, x2, y2 = (int(v) for v in self.canvas.coords(self.box))
        ox, oy = self.canvas.winfo_rootx(), self.canvas.winfo_rooty()
        return [ox + x1, oy + y1, ox + x2, oy + y2]

    def _wheel(self, widget: tk.Listbox | tk.Text, direction: str) -> None:
        self.wheel[direction] += 1
        # Report after Tk's own binding has scrolled the view.
        self.root.after_idle(lambda: emit(
            event="wheel", direction=direction, counts=dict(self.wheel),
            yfirst=widget.yview()[0], xfirst=widget.xview()[0],
        ))

    def _ready(self) -> None:
        self.root.update_idletasks()
        geometry = {
            name: [w.winfo_rootx(), w.winfo_rooty(), w.winfo_width(), w.winfo_height()]
            for name, w in self.widgets.items()
        }
        emit(event="ready", screen=list(self.screen), widgets=geometry, box=self._box_root(),
             swatch=[geometry["canvas"][0] + 200, geometry["canvas"][1] + 100, 100, 60],
             colors={"swatch": SWATCH_COLOR, "box": BOX_COLOR})


TITLE = "GLM-V test app"  # the window name xdotool reports for the focused window


def main() -> None:
    root = tk.Tk()
    root.title(TITLE)
    App(root)
    root.mainloop()


if __name__ == "__main__":
    main()
