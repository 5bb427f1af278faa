"""Tables as CSV, JSON and markdown, and the one way numbers are printed in text."""
import csv
import json
import math


def number_text(value, digits=4):
    """A number as people read it: `digits` significant digits, never an exponent; None as "-"."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or (math.isfinite(value) and abs(value) >= 10 ** digits):
        return f"{value:,.0f}"
    return f"{value:.{digits}g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"


def params_text(params):
    """2100000 -> "2.1M"; None (size unknown) -> "?"."""
    if params is None:
        return "?"
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if params >= scale:
            return f"{params / scale:.3g}{suffix}"
    return str(params)


def write_csv(path, rows, columns):
    with open(path, "w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def write_json(path, value):
    with open(path, "w") as out:
        json.dump(value, out, indent=2)
        out.write("\n")


def markdown_table(rows, columns, headers=None):
    """columns: the keys shown; headers: their titles (the keys themselves by default)."""
    headers = headers or columns
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(number_text(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
