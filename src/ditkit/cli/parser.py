"""The argparse parser of every ``ditkit`` command, with defaults in ``--help`` and image/video modes.

``generate`` and ``eval`` each have two parsers: the image one, and a video twin (``add_video_mode``)
that takes over when the arguments ask for video (``--video``, or for ``eval`` a video model
folder). Each mode's parser knows only its own options, so argparse itself refuses an option of
the other mode; that refusal is one line naming the mode the option belongs to (`ModeError`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from ..cli_types import UserError


class HelpFormatter(argparse.HelpFormatter):
    """argparse's help with each option's default appended, where it has one worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or not _shown(action.default) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def _shown(default) -> bool:
    """Whether a default is worth showing in --help (not None, False, [] or argparse.SUPPRESS)."""
    return default is not None and default is not False and default != [] and default is not argparse.SUPPRESS


class ModeError(UserError):
    """An option of the other mode (image vs video): one line under ``ditkit <command>``, exit status 2."""

    def __init__(self, command: str, message: str):
        super().__init__(message)
        self.command = command


class Parser(argparse.ArgumentParser):
    """An `argparse.ArgumentParser` with `HelpFormatter`, that records its option strings and may hand
    its arguments over to a video twin (`add_video_mode`)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        self.flags: set[str] = set()  # before argparse adds -h
        super().__init__(*args, **kwargs)
        self.video: Parser | None = None
        self._wants_video: Callable[[list[str]], bool] | None = None
        self._hints: tuple[str, str] = ("", "")  # (said of a video option here, said of an image option in the twin)

    def add_argument(self, *args, **kwargs) -> argparse.Action:
        if kwargs.get("help") is None and _shown(kwargs.get("default")) and args and str(args[0]).startswith("-"):
            kwargs["help"] = "default: %(default)s"  # an option without a help text still shows its default
        action = super().add_argument(*args, **kwargs)
        self.flags.update(action.option_strings)
        return action

    def add_video_mode(self, wants_video: Callable[[list[str]], bool], *, video_hint: str, image_hint: str,
                       **kwargs) -> Parser:
        """A twin parser for the video mode of this command (``prog`` + `` --video``), chosen when
        ``wants_video(arguments)`` holds; returns it to receive the video options."""
        kwargs.setdefault("prog", f"{self.prog} --video")
        self.video = Parser(**kwargs)
        self._wants_video = wants_video
        self._hints = (video_hint, image_hint)
        return self.video

    @property
    def command(self) -> str:
        return self.prog.split()[-1]

    def parse_known_args(self, args: Sequence[str] | None = None, namespace=None):
        if self.video is None or self._wants_video is None:
            return super().parse_known_args(args, namespace)
        args = list(sys.argv[1:] if args is None else args)
        video = self._wants_video(args)
        parser, other, hint = (self.video, self, self._hints[1]) if video else (self, self.video, self._hints[0])
        ns, extras = argparse.ArgumentParser.parse_known_args(parser, args, namespace)
        for token in extras:
            flag = token.split("=", 1)[0]
            if flag.startswith("--") and flag in other.flags:
                raise ModeError(self.command, f"{flag} {hint}")
        return ns, extras


class _Malformed(Exception):
    pass


class _Lenient(argparse.ArgumentParser):
    def error(self, message: str):
        raise _Malformed(message)


def mode_flags(args: list[str], *options: str) -> argparse.Namespace:
    """``--video`` and the given options (e.g. ``--model``) read from a command's arguments before the
    mode is known; a malformed list reads as no options, and the mode's parser reports it."""
    pre = _Lenient(add_help=False)
    pre.add_argument("--video", action="store_true")
    for option in options:
        pre.add_argument(option)
    try:
        return pre.parse_known_args(args)[0]
    except _Malformed:
        return argparse.Namespace(video=False, **{o.lstrip("-").replace("-", "_"): None for o in options})
