"""Prompt templates live here as text files; `load(name)` reads one, `declines(language)` the
refusal in a language."""

import tomllib
from functools import cache
from pathlib import Path

PROMPTS_DIR = Path(__file__).resolve().parent


@cache
def load(name: str) -> str:
    """The template `prompts/<name>.txt`, with `{placeholders}` for str.format."""
    return (PROMPTS_DIR / f"{name}.txt").read_text(encoding="utf-8")


@cache
def declines(language: str) -> dict[str, str]:
    """The refusal's phrases in `language` (English where it has none): `declines.toml`."""
    table = tomllib.loads((PROMPTS_DIR / "declines.toml").read_text(encoding="utf-8"))
    phrases: dict[str, str] = table.get(language, table["English"])
    return phrases
