"""A short-lived on-screen marker: a red ring at a screen point, drawn by a Tk window.

Run as its own process (`python -m glmv_agent.marker X Y SECONDS`) so the assistant's
thread never owns a Tk main loop, and so the window is surely gone (the process has
exited) before the real click lands on the spot it marked.
"""

from __future__ import annotations

import subprocess
import sys

RING = 56  # window size in screen units


def show(x: float, y: float, seconds: float, label: str = "") -> None:
    """Display the ring centred on (x, y) for `seconds`; blocks until it closes."""
    import tkinter as tk

    root = tk.Tk()
    root.overrideredirect(True)  # no title bar or border
    root.attributes("-topmost", True)
    width = RING + (8 * len(label) + 12 if label else 0)
    root.geometry(f"{width}x{RING}+{int(x) - RING // 2}+{int(y) - RING // 2}")
    # Where the platform supports it, everything but the ring is see-through.
    transparent = "#010203"
    root.configure(bg=transparent)
    try:
        root.attributes("-transparentcolor", transparent)
    except tk.TclError:
        pass
    canvas = tk.Canvas(root, width=width, height=RING, bg=transparent, highlightthickness=0)
    canvas.pack()
    canvas.create_oval(4, 4, RING - 4, RING - 4, outline="#e8362d", width=5)
    canvas.create_oval(RING // 2 - 4, RING // 2 - 4, RING // 2 + 4, RING // 2 + 4,
                       fill="#e8362d", outline="")
    if label:
        canvas.create_text(RING + 4, RING // 2, text=label, anchor="w", fill="#e8362d",
                           font=("DejaVu Sans", 11, "bold"))
    root.after(int(seconds * 1000), root.destroy)
    root.mainloop()


def flash(x: float, y: float, seconds: float, label: str = "", env: dict[str, str] | None = None) -> None:
    """Show the marker from a child process and wait for it to close (best effort)."""
    command = [sys.executable, "-m", "glmv_agent.marker", str(x), str(y), str(seconds), label]
    try:
        subprocess.run(command, env=env, timeout=seconds + 10, check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        pass  # a missing marker must never block the assistant


if __name__ == "__main__":
    show(float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]),
         sys.argv[4] if len(sys.argv) > 4 else "")
