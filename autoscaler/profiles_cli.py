"""``pdscale profiles``: list built-in latency profiles with their key numbers, or show one (name or file)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "profiles",
        help="list or show latency profiles",
        description="List built-in latency profiles (prefill tok/s at an 8k chunk, decode step at batch 1/64/256 "
        "with 1k context per sequence, KV capacity), or show one built-in or user profile file.",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_list)
    sub = p.add_subparsers(dest="profiles_command", metavar="ACTION")
    show = sub.add_parser("show", help="show one profile (built-in name or YAML path) with its sources")
    show.add_argument("profile", metavar="NAME|PATH")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(func=_show)


def _list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from autoscaler.profiles import ProfileError, builtin_profiles, load_profile, profile_summary

    rows = []
    for name in builtin_profiles():
        try:
            rows.append(profile_summary(load_profile(name)))
        except ProfileError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(title="built-in latency profiles (decode: 1k context per sequence)")
    for col in ("name", "model", "GPUs", "prefill tok/s @8k", "decode B=1", "B=64", "B=256", "KV tokens"):
        table.add_column(col, justify="left" if col in ("name", "model") else "right", no_wrap=True)
    for r in rows:
        table.add_row(
            r["name"],
            r["model"],
            str(r["gpus_per_replica"]),
            f"{r['prefill_tokens_per_s_at_8k']:,.0f}",
            f"{r['decode_step_s_b1_ctx1k'] * 1e3:.2f} ms",
            f"{r['decode_step_s_b64_ctx1k'] * 1e3:.2f} ms",
            f"{r['decode_step_s_b256_ctx1k'] * 1e3:.2f} ms",
            f"{r['kv_capacity_tokens']:,}",
        )
    _console().print(table)
    return 0


def _console() -> Console:
    """A console that does not squeeze tables to 80 columns when stdout is a pipe."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=160)


def _show(args: argparse.Namespace) -> int:
    from autoscaler.profiles import ProfileError, load_profile, profile_path, profile_summary

    try:
        path = profile_path(args.profile)
        summary = profile_summary(load_profile(args.profile))
    except ProfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({**summary, "path": str(path)}, indent=2))
        return 0
    console = _console()
    console.print(f"[bold]{summary['name']}[/bold]  ({path})")
    for key, value in summary.items():
        if key in ("name", "source"):
            continue
        text = f"{value:.6g}" if isinstance(value, float) else str(value)
        console.print(f"  {key:28s} {text}")
    console.print("  sources:")
    for item in str(summary["source"]).split(" | "):
        console.print(f"    - {item}", soft_wrap=False)
    return 0
