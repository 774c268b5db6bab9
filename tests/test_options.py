"""Dataclass fields -> flags and config-file keys (percept.core.options declares them, percept.interface.cli_options parses them
with jsonargparse), torch-free."""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from percept.core.options import option
from percept.interface.cli_options import _mapping_argv, add_field_flags

jsonargparse = pytest.importorskip("jsonargparse")


@dataclass
class Example:
    rate: float = option(0.5, "a rate")
    count: int | None = option(None, "a count", aliases=("--n",))
    mode: str = option("a", "a mode", choices=("a", "b"))
    sizes: tuple[int, int] = option((3, 4), "two sizes")
    loud: bool = option(False, "say more")
    names: list[str] = option(help="some names", default_factory=lambda: ["x"])
    weights: dict[str, float] | None = option(None, "per-task weights")
    hidden: dict = field(default_factory=dict)        # not an option: a config-file key only


def _parse(argv, prefix=""):
    parser = jsonargparse.ArgumentParser(exit_on_error=False, env_prefix=False, default_env=False)
    parser.add_argument("--config", action="config")
    add_field_flags(parser, Example, prefix)
    return parser.parse_args(_mapping_argv(argv, {"--weights"})).as_dict()


def test_flags_are_typed_defaulted_and_named_after_the_fields():
    got = _parse([])
    got.pop("config")
    assert got == {"rate": 0.5, "count": None, "mode": "a", "sizes": [3, 4], "loud": False, "names": ["x"],
                   "weights": None, "hidden": None}
    got = _parse(["--rate", "2", "--n", "7", "--mode", "b", "--sizes", "5", "6", "--loud", "--names", "p", "q",
                  "--weights", "iqa=1", "emotion=0.5"])
    assert {k: got[k] for k in ("rate", "count", "mode", "sizes", "loud", "names", "weights")} == {
        "rate": 2.0, "count": 7, "mode": "b", "sizes": [5, 6], "loud": True, "names": ["p", "q"],
        "weights": {"iqa": 1.0, "emotion": 0.5}}
    assert _parse(["--no-loud"])["loud"] is False and _parse(["--weights", "{iqa: 2}"])["weights"] == {"iqa": 2.0}
    assert _parse(["--count", "3"], prefix="model.")["model"]["count"] == 3      # nested, as config.json's model


def test_a_config_file_sets_the_same_keys_and_typed_flags_after_it_win(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("rate: 0.25\nsizes: [7, 8]\nweights: {iqa: 3}\nhidden: {a: 1}\n")
    got = _parse(["--config", str(path), "--rate", "1"])
    assert (got["rate"], got["sizes"], got["weights"], got["hidden"]) == (1.0, [7, 8], {"iqa": 3.0}, {"a": 1})


def test_bad_values_and_unsupported_field_types_are_refused(tmp_path):
    for argv, message in ((["--mode", "c"], "invalid choice"), (["--count", "x"], "count"),
                          (["--rate", "fast"], "rate"), (["--weights", "[1, 2]"], "weights")):
        with pytest.raises(jsonargparse.ArgumentError, match=message):
            _parse(argv)
    with pytest.raises(ValueError, match="names iqa more than once"):
        _parse(["--weights", "iqa=1", "iqa=2"])
    with pytest.raises(ValueError, match="--weights: 'iqa=x': 'x' is not a number"):
        _parse(["--weights", "iqa=x"])
    assert _parse(["--weights=iqa=1", "emotion=2"])["weights"] == {"iqa": 1.0, "emotion": 2.0}
    (tmp_path / "u.yaml").write_text("rte: 1\n")
    with pytest.raises(jsonargparse.ArgumentError, match="rte"):
        _parse(["--config", str(tmp_path / "u.yaml")])

    @dataclass
    class Bad:
        table: set = option(None, "no flag for this")
    with pytest.raises(TypeError, match="no command-line flag for a field of type"):
        add_field_flags(jsonargparse.ArgumentParser(), Bad)
