"""`--help` of every sub-command (bench aside, for now): every option has help text, and it names the option's
default (or says it is required); options with a fixed set of values list them, read from the registries."""

from __future__ import annotations

import argparse
import re

import pytest

from studio.cli import build_parser, main
from studio.cli.flags import HelpFormatter, choices_of

FIXED_SETS = {"--dataset": "dataset", "--denoiser": "denoiser", "--sampler": "sampler", "--schedule": "schedule",
              "--spacing": "spacing", "--device": "device"}


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: p for name, p in sub.choices.items() if name != "bench"}


COMMANDS = sorted(_commands())


def _help_of(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    formatter = parser._get_formatter()
    return formatter._expand_help(action) if action.help else ""


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_has_help_with_its_default_and_choices(command):
    parser = _commands()[command]
    assert parser.formatter_class is HelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        text = _help_of(parser, action)
        name = action.option_strings[-1] if action.option_strings else action.dest
        assert text.strip(), f"{command} {name}: no help"
        if not action.option_strings:
            continue
        assert re.search(r"default|required", text), f"{command} {name}: no default named: {text!r}"
        if name in FIXED_SETS and not (command == "calibrate" and name == "--denoiser"):
            assert all(choice in text for choice in choices_of(FIXED_SETS[name])), f"{command} {name}: {text!r}"


def test_sample_help_shows_choices_and_defaults(capsys):
    with pytest.raises(SystemExit) as done:
        main(["sample", "--help"])
    assert done.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "(choices: auto, cpu, cuda)" in out and "else ddim" in out and "(default: off)" in out
    assert "(choices: trailing, leading, linspace)" in out and "run folder to write (new or empty) (required)" in out


def test_train_help_reads_the_training_parameters(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(choices: epsilon, v_prediction, sample) (default: epsilon)" in out
    assert "(choices: fp32, fp16) (default: fp32)" in out and "optimiser steps (default: 20000)" in out


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("analytic-diffusion-studio ")
