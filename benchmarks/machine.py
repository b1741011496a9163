"""What every benchmark records beside its figures: the machine description (lives in `core.machine`), and the
writer of a result file with its Markdown twin."""

import json
from pathlib import Path

from core.machine import describe_machine

__all__ = ["describe_machine", "write_results"]


def write_results(out: Path, result: dict, markdown: str) -> None:
    """`result` as JSON at `out`, `markdown` beside it (same name, .md), and the Markdown printed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown)
    print(markdown)
