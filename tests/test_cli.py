from __future__ import annotations

import subprocess
import sys

from mmlib.cli import COMMANDS, main


def test_help_lists_commands(capsys) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_unknown_command_is_usage_error(capsys) -> None:
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_python_dash_m_and_console_script_agree() -> None:
    a = subprocess.run([sys.executable, "-m", "mmlib", "--version"], capture_output=True, text=True)
    assert a.returncode == 0 and a.stdout.startswith("mmlib ")


def test_every_command_module_exposes_the_protocol() -> None:
    import importlib

    for name, (module, _) in COMMANDS.items():
        mod = importlib.import_module(module)
        assert callable(mod.configure_parser) and callable(mod.run_cli), name


def test_finetune_help_names_every_task(capsys) -> None:
    import pytest

    from mmlib.tasks.catalogue import TASKS

    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    missing = [name for name in TASKS if name not in out]
    assert not missing, f"mmlib finetune --help does not name {missing}"
