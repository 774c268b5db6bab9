"""percept.options: dataclass fields -> argparse flags (issue 14), torch-free."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import pytest

from percept.options import add_flags, option, values


@dataclass
class Example:
    rate: float = option(0.5, "a rate")
    count: int | None = option(None, "a count", aliases=("--n",))
    mode: str = option("a", "a mode", choices=("a", "b"))
    sizes: tuple[int, int] = option((3, 4), "two sizes")
    loud: bool = option(False, "say more")
    hidden: dict = field(default_factory=dict)        # not an option: no flag


def _parse(argv):
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_flags(parser, Example)
    return parser.parse_args(argv)


def test_flags_are_typed_defaulted_and_read_back_from_the_fields():
    assert values(Example, _parse([])) == {"rate": 0.5, "count": None, "mode": "a", "sizes": (3, 4), "loud": False}
    got = values(Example, _parse(["--rate", "2", "--n", "7", "--mode", "b", "--sizes", "5", "6", "--loud"]))
    assert got == {"rate": 2.0, "count": 7, "mode": "b", "sizes": (5, 6), "loud": True}
    assert Example(**got).sizes == (5, 6)
    assert not hasattr(_parse([]), "hidden")


def test_bad_values_and_unsupported_field_types_are_refused():
    with pytest.raises(argparse.ArgumentError, match="invalid choice"):
        _parse(["--mode", "c"])
    with pytest.raises(argparse.ArgumentError, match="invalid int value"):
        _parse(["--count", "x"])

    @dataclass
    class Bad:
        table: dict = option(None, "no flag for this")
    with pytest.raises(TypeError, match="no command-line flag for a field of type 'dict'"):
        add_flags(argparse.ArgumentParser(), Bad)


def test_a_mapping_field_is_key_value_pairs():
    @dataclass
    class Weighted:
        weights: dict[str, float] | None = option(None, "per-task weights")

    def parse(argv):
        parser = argparse.ArgumentParser(exit_on_error=False)
        add_flags(parser, Weighted)
        return values(Weighted, parser.parse_args(argv))

    assert parse([]) == {"weights": None}
    assert parse(["--weights", "iqa=1", "emotion=0.5"]) == {"weights": {"iqa": 1.0, "emotion": 0.5}}
    with pytest.raises(argparse.ArgumentError, match="expected KEY=VALUE, got 'iqa'"):
        parse(["--weights", "iqa"])
    with pytest.raises(argparse.ArgumentError, match="'x' is not a float"):
        parse(["--weights", "iqa=x"])
    with pytest.raises(ValueError, match="names iqa more than once"):
        parse(["--weights", "iqa=1", "iqa=2"])
