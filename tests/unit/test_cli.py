"""The ``pdscale`` command table (autoscaler/cli.py): ``pdscale --help`` imports no command module, a command
imports only its own module, every command module's top level is light, and every --help is plain text with
every option explained. Import checks run in fresh interpreters (this one has imported everything)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from autoscaler.cli import COMMANDS, build_parser, command_in, main

ROOT = Path(__file__).resolve().parents[2]
# Third-party packages a command module must not import at top level (each costs 0.05-2 s): the handlers do.
HEAVY = (
    "numpy", "scipy", "matplotlib", "rich", "kubernetes", "aiohttp", "requests", "urllib3", "yaml",
    "prometheus_client", "prometheus_api_client", "pandas", "torch", "vllm", "openai", "kmock",
)  # fmt: skip


def modules_loaded_by(code: str, *, cwd: Path = ROOT) -> set[str]:
    """Top-level names in ``sys.modules`` after ``code`` runs in a fresh interpreter."""
    probe = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    proc = subprocess.run([sys.executable, "-c", probe], cwd=cwd, capture_output=True, text=True, timeout=60,
                          check=True)  # fmt: skip
    return set(json.loads(proc.stdout.splitlines()[-1]))


def heavy_in(modules: set[str]) -> list[str]:
    return sorted(h for h in HEAVY if h in modules)


REGISTER = textwrap.dedent("""
    import argparse, importlib
    sub = argparse.ArgumentParser().add_subparsers()
    importlib.import_module({module!r}).register(sub)
""")


@pytest.mark.parametrize("name", list(COMMANDS))
def test_command_module_registers_without_heavy_imports(name: str) -> None:
    loaded = modules_loaded_by(REGISTER.format(module=COMMANDS[name].module))
    assert heavy_in(loaded) == [], f"{COMMANDS[name].module} imports {heavy_in(loaded)} at top level or in register()"


def test_the_check_catches_a_heavy_top_level_import(tmp_path: Path) -> None:
    (tmp_path / "heavy_cmd.py").write_text("import numpy\n\ndef register(sub):\n    sub.add_parser('x')\n")
    loaded = modules_loaded_by(REGISTER.format(module="heavy_cmd"), cwd=tmp_path)
    assert heavy_in(loaded) == ["numpy"]


def test_top_level_help_imports_no_command_module() -> None:
    loaded = modules_loaded_by("from autoscaler.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n"
                               "    pass")  # fmt: skip
    command_modules = {c.module for c in COMMANDS.values()}
    assert sorted(command_modules & loaded) == []
    assert heavy_in(loaded) == []


# command modules another command imports for shared options (light, as checked above)
SHARES_OPTIONS_OF = {
    "run": {"metrics_adapter.command"},  # --serve-external-metrics: the adapter's serving flags
    "plan": {"sim.bench_cli"},  # the --rate-scale rule and the run flags bench and plan share
}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_command_imports_only_its_own_module(name: str) -> None:
    loaded = modules_loaded_by(f"from autoscaler.cli import main\ntry:\n    main([{name!r}, '--help'])\n"
                               "except SystemExit:\n    pass")  # fmt: skip
    others = {c.module for n, c in COMMANDS.items() if n != name} - SHARES_OPTIONS_OF.get(name, set())
    assert COMMANDS[name].module in loaded
    assert sorted(others & loaded) == []
    assert heavy_in(loaded) == []


def test_top_level_help_lists_every_command_with_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = "".join(capsys.readouterr().out.split())  # argparse wraps the help column (also at hyphens)
    for name, command in COMMANDS.items():
        assert "".join(f"{name} {command.help}".split()) in out


def _subparsers(parser: argparse.ArgumentParser) -> Iterator[argparse._SubParsersAction[argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield action


def test_registered_help_matches_the_table() -> None:
    action = next(_subparsers(build_parser()))
    helps = {a.dest: a.help for a in action._choices_actions}
    assert helps == {name: c.help for name, c in COMMANDS.items()}


def _all_parsers(parser: argparse.ArgumentParser, path: str = "pdscale") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in _subparsers(parser):
        for name, sub in action.choices.items():
            yield from _all_parsers(sub, f"{path} {name}")


ALL_PARSERS = list(_all_parsers(build_parser()))


@pytest.mark.parametrize("parser", [p for _, p in ALL_PARSERS], ids=[n for n, _ in ALL_PARSERS])
def test_help_is_plain_text_and_explains_every_option(parser: argparse.ArgumentParser) -> None:
    text = parser.format_help()
    assert "``" not in text and ":class:" not in text, text  # no reStructuredText from docstrings
    unexplained = [a.option_strings[0] for a in parser._actions if a.option_strings and not a.help]
    assert unexplained == []


def test_command_in_finds_the_subcommand() -> None:
    assert command_in(["-v", "run", "--help"]) == "run"
    assert command_in(["--help"]) is None
    assert command_in(["nope"]) is None
    assert command_in(["--", "run"]) is None


def test_unknown_command_is_reported_with_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["nope"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'nope'" in err and "'run'" in err


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_bench_cli_constants_match_the_simulator() -> None:
    """sim/bench_cli.py spells the replicate spread so that --help needs no numpy; it must be the workload's."""
    from sim import bench_cli
    from sim.workload import REPLICATE_SPREAD_S

    assert bench_cli.REPLICATE_SPREAD_S == REPLICATE_SPREAD_S


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["bench"], 50.0),  # the built-in Azure traces
        (["bench", "--traces", "t.csv"], 1.0),
        (["bench", "--generator", "poisson:rate=1,duration=10"], 1.0),
        (["bench", "--rate-scale", "7"], 7.0),
        (["plan", "--trace", "t.csv"], 1.0),
        (["plan", "--generator", "poisson:rate=1,duration=10"], 1.0),
        (["plan", "--trace", "t.csv", "--rate-scale", "7"], 7.0),
    ],
)
def test_rate_scale_defaults_agree_between_bench_and_plan(argv: list[str], expected: float) -> None:
    from sim.bench_cli import default_rate_scale

    args = build_parser([argv[0]]).parse_args(argv)
    traces = getattr(args, "traces", None) or ([args.trace] if getattr(args, "trace", None) else [])
    generators = args.generator if isinstance(args.generator, list) else ([args.generator] if args.generator else [])
    assert default_rate_scale(args.rate_scale, traces, generators) == expected


def test_a_missing_simulator_package_names_the_extra(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    import sim.demo

    def needs_numpy(args: argparse.Namespace) -> int:
        raise ModuleNotFoundError("No module named 'numpy'", name="numpy")

    monkeypatch.setattr(sim.demo, "demo_command", needs_numpy)
    assert main(["demo", "--no-live"]) == 2
    assert "pip install 'pdscale[sim]'" in capsys.readouterr().err


def test_other_missing_modules_are_not_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    import sim.demo

    def broken(args: argparse.Namespace) -> int:
        raise ModuleNotFoundError("No module named 'nothere'", name="nothere")

    monkeypatch.setattr(sim.demo, "demo_command", broken)
    with pytest.raises(ModuleNotFoundError):
        main(["demo", "--no-live"])
