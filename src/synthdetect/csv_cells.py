"""CSV cells a spreadsheet shows as text, never runs as a formula (CSV injection, CWE-1236).

Why: the CSV of ``synthdetect detect --format csv`` and ``synthdetect scan-export``/``--export`` is opened in
Excel, LibreOffice or Google Sheets by moderators who scanned folders of user uploads.  A file named
``=HYPERLINK("http://x","click").jpg`` or ``@SUM(1+1).png`` (and the error message that starts with that name)
became a live formula there.  OWASP's rule (https://owasp.org/www-community/attacks/CSV_Injection): a cell that
starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a leading apostrophe, which spreadsheets
read as "this cell is text" and do not show.  The csv module already quotes the cell and doubles its quotes.

Only text columns are touched: numbers (a negative ``raw_logit``) stay numbers.  The apostrophe is a CSV-only
change; JSON, JSON lines, Parquet and the scan database keep every value exactly as it was.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

#: First characters that make a spreadsheet read a cell as a formula (OWASP's list).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_text(value: Any) -> Any:
    """``value`` with a leading apostrophe if it is text a spreadsheet would run as a formula; anything else
    (a number, ``None``, harmless text) as it is."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def spreadsheet_row(row: Mapping[str, Any], text_columns: Iterable[str]) -> dict[str, Any]:
    """A copy of ``row`` with the cells of ``text_columns`` made safe (:func:`spreadsheet_text`); other columns,
    numbers written as text included, are left as they are."""
    text = set(text_columns)
    return {key: spreadsheet_text(value) if key in text else value for key, value in row.items()}
