"""Make text from feeds safe to print on a terminal.

Feed titles, error messages and snippets come from strangers. Printed raw, an ANSI
escape sequence can recolour, hide or rewrite what the user sees (or set the window
title, or on some terminals worse), so everything the CLI prints passes through here.
"""

from __future__ import annotations

import re

# ESC-introduced sequences (7-bit) and their 8-bit C1 forms:
#   CSI  ESC [ ... final byte      (colours, cursor moves, erase)
#   OSC/DCS/SOS/PM/APC  ESC ] P X ^ _ ... terminated by BEL or ST (ESC \ or \x9c)
#   any other two-character ESC sequence
_ANSI = re.compile(
    r"""
    (?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?              # CSI
  | (?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])         # string sequences ...
    .*?(?:\x07|\x1b\\|\x9c|$)                       # ... up to their terminator
  | \x1b[ -/]*[0-~]?                                # other escape sequences
    """,
    re.VERBOSE | re.DOTALL,
)
# C0 controls except tab and newline, DEL, and C1 controls.
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def strip_terminal_controls(text: str) -> str:
    """Remove ANSI escape sequences and C0/C1 control characters, keeping \\n and \\t."""
    return _CONTROLS.sub("", _ANSI.sub("", text))
