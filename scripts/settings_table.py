"""Prints the README's configuration table from `jobpulse.settings.Settings`, so the table stays true.

    .venv/bin/python scripts/settings_table.py                     # print the table
    .venv/bin/python scripts/settings_table.py --check README.md   # fail if README.md's copy differs

The copy in a Markdown file sits between `<!-- settings-table:start -->` and `<!-- settings-table:end -->`.
"""

import argparse
import sys
from pathlib import Path

from pydantic import AliasChoices
from pydantic.fields import FieldInfo

from jobpulse.settings import Settings

START = "<!-- settings-table:start -->"
END = "<!-- settings-table:end -->"


def env_var(name: str, field: FieldInfo) -> str:
    """The variable that sets a field: its first alias if it has any, else the prefixed field name."""
    alias = field.validation_alias
    if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
        return alias.choices[0]
    if isinstance(alias, str):
        return alias
    return f"{Settings.model_config.get('env_prefix', '')}{name}".upper()


def default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if value is None or value == ():
        return "(unset)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


def table() -> str:
    lines = ["| Variable | Default | What it does |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        description = (field.description or "").replace("|", "\\|")
        lines.append(f"| `{env_var(name, field)}` | {default(field)} | {description} |")
    return "\n".join(lines) + "\n"


def embedded(path: Path) -> str | None:
    """The table between the markers in `path`, or None without markers."""
    text = path.read_text()
    start, end = text.find(START), text.find(END)
    if start == -1 or end < start:
        return None
    return text[start + len(START) : end].strip("\n") + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--check", type=Path, metavar="FILE", help="compare with FILE's copy instead of printing"
    )
    args = parser.parse_args()
    if args.check is None:
        sys.stdout.write(table())
        return 0
    copy = embedded(args.check)
    if copy is None:
        sys.stderr.write(f"{args.check}: no {START} … {END} markers around the settings table\n")
        return 1
    if copy != table():
        sys.stderr.write(
            f"{args.check}: the settings table is out of date with jobpulse/settings.py; paste the output "
            "of `.venv/bin/python scripts/settings_table.py` between its markers\n"
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
