"""How ``fedops COMMAND --help`` reads: every option with its default, for every command."""

from __future__ import annotations

import argparse


class DefaultsShown(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help already says it (some
    defaults are derived, e.g. "default: 2*log2(n)") or there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or not action.option_strings
            or default is None
            or default is False
            or default == ""
            or default is argparse.SUPPRESS
            or action.required
        ):
            return text
        shown = ", ".join(map(str, default)) if isinstance(default, list | tuple) else default
        return f"{text} (default: {str(shown).replace('%', '%%')})".lstrip()


def all_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """``parser`` and every sub-command's parser below it."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                found.extend(all_parsers(child))
    return found
