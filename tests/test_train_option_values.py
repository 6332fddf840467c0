"""``--option`` values are read as their key needs, before the data is read.

Before: ``--option depth=abc`` failed with Python's "invalid literal for int() with base 10: 'abc'", naming no
option, and ``--option tta_hflip=maybe`` (or a typo such as ``=ture``) read silently as off.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from synthdetect.cli import app
from synthdetect.train.registry import option_flag


@pytest.mark.parametrize("args, message", [
    (["--option", "depth=abc"], "--option depth=abc: expected a whole number"),
    (["--option", "width=-3"], "--option width=-3: expected a whole number, 0 or more"),
    (["--option", "tta_hflip=maybe"], "--option tta_hflip=maybe: expected true or false"),
    (["--option", "max_aspect=0"], "--option max_aspect=0: expected a number above 0"),
    (["--model", "small-pair", "--option", "lite_lr=fast"], "--option lite_lr=fast: expected a number"),
])
def test_an_option_value_its_key_cannot_take_is_refused_before_the_data_is_read(tmp_path: Path, args, message):
    result = CliRunner().invoke(app, ["train", str(tmp_path / "nothing"), "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    assert "dataset not found" not in result.output and "invalid literal" not in result.output


def test_switch_words():
    assert [option_flag(v) for v in ("true", "Yes", "ON", "1", True)] == [True] * 5
    assert [option_flag(v) for v in ("false", "no", "off", "0", False, None, "")] == [False] * 7
    with pytest.raises(ValueError, match="'ture' is not a switch value"):
        option_flag("ture")
