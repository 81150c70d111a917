"""The README's fenced code blocks, in order, with the output the README says they print."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.S | re.M)


@dataclass(frozen=True)
class Block:
    language: str
    code: str
    line: int
    """Line of the opening fence, for messages."""
    prints: str | None = None
    """The `text` block right after it, if the prose between says what it prints."""


def blocks(path: Path = README) -> list[Block]:
    text = path.read_text()
    found: list[Block] = []
    matches = list(FENCE.finditer(text))
    for i, match in enumerate(matches):
        language, code = match.group(1), match.group(2)
        if language == "text" and found and found[-1].prints is None:
            between = text[matches[i - 1].end() : match.start()]
            if "prints" in between and len(between) < 300:  # "prints:" and at most a sentence
                found[-1] = Block(found[-1].language, found[-1].code, found[-1].line, code)
                continue
        found.append(Block(language, code, text.count("\n", 0, match.start()) + 1))
    return found


def of_language(language: str, path: Path = README) -> list[Block]:
    return [block for block in blocks(path) if block.language == language]
