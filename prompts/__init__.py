"""Prompt templates live here as text files; `load(name)` reads one."""

from functools import cache
from pathlib import Path

PROMPTS_DIR = Path(__file__).resolve().parent


@cache
def load(name: str) -> str:
    """The template `prompts/<name>.txt`, with `{placeholders}` for str.format."""
    return (PROMPTS_DIR / f"{name}.txt").read_text(encoding="utf-8")
