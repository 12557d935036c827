"""Markdown for the reports people read (run summary, approval decision): text that keeps a table or a line whole,
links that open."""

from __future__ import annotations


def inline(text: str) -> str:
    """One line of markdown text: no newline or pipe breaking a table row or a paragraph."""
    return " ".join(str(text).split()).replace("|", "\\|")


def link(url: str) -> str:
    """A web address as a link; anything else (a file:// or mem:// URI, a path) as code."""
    return f"[{url}]({url})" if url.startswith(("http://", "https://")) else f"`{url}`"


def table(title: str, rows: list[tuple[str, str]]) -> str:
    """A titled two-column table of facts; the values made inline."""
    body = "\n".join(f"| {key} | {inline(value)} |" for key, value in rows)
    return f"{title}\n\n| | |\n|---|---|\n{body}"
