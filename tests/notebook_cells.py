"""Helpers of the tests that read the lessons' code cells as Python."""
from __future__ import annotations


def as_python(source: str) -> str:
    """A code cell's source as Python: each IPython ``%`` or ``!`` line becomes ``pass`` (one statement)."""
    return "\n".join("pass" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())
