"""The ``mmlib`` command: one module per sub-command, each imported only when used.

Every sub-command is a module of this package (the only place that parses arguments; the
library never imports it), which calls the library and exposes two functions::

    def configure_parser(parser: argparse.ArgumentParser) -> None: ...
    def run_cli(args: argparse.Namespace) -> int: ...   # the exit status

Exit statuses: 0 success, 2 usage error (argparse), others as each command documents.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "notebooks": ("mmlib.cli.notebooks", "execute the book's notebooks (run, sweep)"),
    "book": ("mmlib.cli.book", "build the HTML book from the executed notebooks"),
    "cohort": ("mmlib.cli.cohort", "make the embedded simulated cohort"),
    "curate": ("mmlib.cli.curate", "pre-process datasets into a crop store"),
    "weights": ("mmlib.cli.weights", "import released BrainMVP weights"),
    "pretrain": ("mmlib.cli.pretrain", "self-supervised pre-training"),
    "finetune": ("mmlib.cli.finetune", "fine-tune on a downstream task"),
    "evaluate": ("mmlib.cli.evaluate", "evaluate fine-tuned models, gather reports"),
    "view": ("mmlib.cli.view", "open a study, store entry or run folder in napari"),
    "predict": ("mmlib.cli.predict", "segment or classify new studies with a fine-tuned model"),
    "export": ("mmlib.cli.export", "export a fine-tuned model as a MONAI Bundle"),
}


def _usage() -> str:
    lines = ["usage: mmlib COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`mmlib COMMAND --help` describes one command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mmlib`` console script and of ``python -m mmlib``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(_usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        from mmlib import __version__

        print(f"mmlib {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(
            f"mmlib: unknown command {name!r}; choose one of {', '.join(COMMANDS)}", file=sys.stderr
        )
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"mmlib {name}", description=COMMANDS[name][1])
    module.configure_parser(parser)
    args = parser.parse_args(rest)
    return int(module.run_cli(args) or 0)
