"""The argparse parser of every ``ditkit`` command, with defaults in ``--help`` and image/video modes.

``generate`` and ``eval`` each have two parsers: the image one, and a video twin (``add_video_mode``)
that takes over when the arguments ask for video (``--video``, or for ``eval`` a video model
folder). Each mode's parser knows only its own options, so argparse itself refuses an option of
the other mode; that refusal is one line naming the mode the option belongs to (`ModeError`).

A usage error is one line, ``ditkit <command>: error: <what> (see ditkit <command> --help)``, exit
status 2: the usage block is printed only by ``--help``. Options that cannot be used together, or one
that does nothing without another, are declared on the parser (`Parser.conflicts`, `Parser.requires`,
`Parser.check`) and refused as one line too (`UsageError`), so no option is ever silently dropped.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from ..cli_types import UserError, accepts


class HelpFormatter(argparse.HelpFormatter):
    """argparse's help with each option's default appended, where it has one worth showing, and the range of a
    numeric option (`ditkit.cli_types.accepts`)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if text is argparse.SUPPRESS:
            return text
        shown = "default" not in text and _shown(action.default) and action.option_strings
        parts = ["default: %(default)s"] if shown else []
        span = accepts(action.type)  # the range of a numeric option
        parts += [f"range {span}"] if span else []
        return f"{text} ({'; '.join(parts)})" if parts else text


def _shown(default) -> bool:
    """Whether a default is worth showing in --help (not None, False, [] or argparse.SUPPRESS)."""
    return default is not None and default is not False and default != [] and default is not argparse.SUPPRESS


class UsageError(UserError):
    """Arguments the parser refuses: one line, ``ditkit <command>: error: <message>``, exit status 2 (`ditkit.cli.main`)."""

    def __init__(self, command: str, message: str):
        super().__init__(" ".join(str(message).splitlines()))
        self.command = command  # "generate", "bench accel"; "" for ditkit itself

    @property
    def prog(self) -> str:
        return f"ditkit {self.command}".rstrip()


class ModeError(UsageError):
    """An option of the other mode (image vs video)."""


Check = Callable[[argparse.Namespace, set[str]], "str | None"]


class Parser(argparse.ArgumentParser):
    """An `argparse.ArgumentParser` with `HelpFormatter` and one-line errors, that records its option strings,
    checks its declared option conflicts, and may hand its arguments over to a video twin (`add_video_mode`)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        self.flags: set[str] = set()  # before argparse adds -h
        self._given: set[str] = set()  # the option strings of the options given in this parse
        self._checks: list[Check] = []
        super().__init__(*args, **kwargs)
        self.video: Parser | None = None
        self._wants_video: Callable[[list[str]], bool] | None = None
        self._hints: tuple[str, str] = ("", "")  # (said of a video option here, said of an image option in the twin)
        self.error_prog = self.prog  # who speaks in an error line (a video twin speaks as its command)

    def error(self, message: str):
        """`UsageError` ``<message> (see <prog> --help)``: one line and exit status 2 from `ditkit.cli.main`, with
        no usage block (argparse's ``error`` prints that and exits; here only ``--help`` prints usage)."""
        raise UsageError(self._command, f"{message} (see {self.prog} --help)")

    @property
    def _command(self) -> str:
        return self.error_prog.removeprefix("ditkit").strip()

    def _get_values(self, action: argparse.Action, arg_strings):
        self._given.update(action.option_strings)  # argparse reads the value of every option given, and only those
        return super()._get_values(action, arg_strings)

    def check(self, rule: Check) -> None:
        """After parsing, ``rule(args, given)`` (``given``: the option strings that were on the command line)
        returns the reason these arguments do not go together, or None."""
        self._checks.append(rule)

    def conflicts(self, first: str, *others: str, why: str = "") -> None:
        """``first`` cannot be given with any of ``others`` (``why`` says which one wins otherwise)."""
        def rule(args, given):
            clash = [o for o in others if o in given]
            if first in given and clash:
                return f"{first} and {clash[0]} cannot be used together" + (f": {why}" if why else "")
            return None

        self.check(rule)

    def requires(self, option: str, needed: str | Callable[[argparse.Namespace], bool], what: str = "") -> None:
        """``option`` does nothing unless ``needed`` (an option given, or a test of the arguments that ``what``
        words) holds: giving it alone is an error."""
        def rule(args, given):
            if option not in given:
                return None
            ok = needed in given if isinstance(needed, str) else needed(args)
            return None if ok else f"{option} needs {what or needed}"

        self.check(rule)

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
        self.video.error_prog = self.prog
        self._wants_video = wants_video
        self._hints = (video_hint, image_hint)
        return self.video

    @property
    def command(self) -> str:
        return self.prog.split()[-1]

    def parse_known_args(self, args: Sequence[str] | None = None, namespace=None):
        """Parse with this parser or its video twin; an argument neither knows is an error here, and the
        declared checks of the parser that parsed run once everything is read."""
        args = list(sys.argv[1:] if args is None else args)
        parser, other, hint = self, None, ""
        if self.video is not None and self._wants_video is not None:
            video = self._wants_video(args)
            parser, other, hint = (self.video, self, self._hints[1]) if video else (self, self.video, self._hints[0])
        parser._given = set()
        ns, extras = argparse.ArgumentParser.parse_known_args(parser, args, namespace)
        for token in extras:
            flag = token.split("=", 1)[0]
            if other is not None and flag.startswith("--") and flag in other.flags:
                raise ModeError(self.command, f"{flag} {hint}")
        if extras:
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
        for rule in parser._checks:
            problem = rule(ns, parser._given)
            if problem:
                raise UsageError(parser._command, problem)
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
