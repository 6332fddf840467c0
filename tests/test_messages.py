"""One line from an exception: what verdict errors, map notes and leaderboards quote."""

from synthdetect.messages import first_line


def test_first_line_skips_blank_lines_and_cuts_long_messages():
    assert first_line(ValueError("\n  \n  bad header  \nTraceback details\n")) == "bad header"
    assert first_line(KeyError()) == "" and first_line(RuntimeError("   ")) == ""  # the caller names the type
    assert first_line(OSError("x" * 500)) == "x" * 200 and len(first_line(OSError("y" * 500), 160)) == 160
