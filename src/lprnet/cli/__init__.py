"""Command-line faces: one module per command group, each exposing ``register(app)``."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="lprnet",
    help="License-plate recognition with LPRNet: recognize, evaluate, rewrite, train, export.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

COMMAND_MODULES = ("recognize", "evaluate", "weights", "rewrite", "synth", "data", "train", "export", "bench",
                   "profile", "serve", "batch", "provinces")

for _name in COMMAND_MODULES:
    importlib.import_module(f"lprnet.cli.{_name}").register(app)


def main() -> None:
    app()
