"""mkdocs hook: render the `ditkit` command line reference from its argparse parsers at build time.

A page that contains the marker line ``<!-- ditkit-cli -->`` gets, in its place, one section per
subcommand (nested ones such as ``bench accel`` included, and the ``--video`` mode of a command that has
one) with the usage and options argparse prints for ``--help``.
Nothing is copied by hand, so the page cannot drift from the parsers.
"""

from __future__ import annotations

import argparse
import os

MARKER = "<!-- ditkit-cli -->"
WIDTH = "100"  # argparse wraps help text to $COLUMNS


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, one-line help, parser) of each direct subcommand, in registration order."""
    out = []
    for action in parser._actions:  # argparse keeps no public accessor for subparsers
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                out.append((name, helps.get(name, ""), sub))
    return out


def _walk(parser: argparse.ArgumentParser, path: list[str], depth: int) -> list[str]:
    lines = []
    for name, help_text, sub in _subcommands(parser):
        full = [*path, name]
        lines.append(f"{'#' * depth} `ditkit {' '.join(full)}`")
        lines.append("")
        if help_text:
            lines.append(help_text[0].upper() + help_text[1:] + ("" if help_text.endswith(".") else "."))
            lines.append("")
        lines.extend(_help_block(sub))
        twin = getattr(sub, "video", None)  # a command's --video mode is a twin parser (ditkit.cli.parser)
        if isinstance(twin, argparse.ArgumentParser):
            lines.append(f"{'#' * min(depth + 1, 6)} `ditkit {' '.join(full)} --video`")
            lines.append("")
            lines.extend(_help_block(twin))
        lines.extend(_walk(sub, full, min(depth + 1, 6)))
    return lines


def _help_block(parser: argparse.ArgumentParser) -> list[str]:
    return ["```text", parser.format_help().rstrip(), "```", ""]


def render() -> str:
    """The generated markdown: the top-level help, then every subcommand."""
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        from ditkit.cli import build_parser

        parser = build_parser()
        lines = ["```text", parser.format_help().rstrip(), "```", ""]
        lines.extend(_walk(parser, [], 2))
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old
    return "\n".join(lines)


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001 - mkdocs hook signature
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, render())
