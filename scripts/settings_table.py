"""Print the README's configuration table from the Settings model (one source of truth).

    python scripts/settings_table.py            # print it
    python scripts/settings_table.py --write    # replace it in README.md, between its markers
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.settings import ENV_PREFIX, Settings  # noqa: E402


def rows() -> list[str]:
    out = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if hasattr(default, "model_dump"):
            default = "see GuardPolicy"
        shown = "—" if default is None or default == [] or default == {} else f"`{default}`"
        secret = " (secret)" if "SecretStr" in repr(field.annotation) else ""
        meaning = (field.description or "").replace("|", "/") + secret
        out.append(f"| `{ENV_PREFIX}{name.upper()}` | {shown} | {meaning} |")
    return out


def write_readme(readme: Path) -> None:
    text = readme.read_text(encoding="utf-8")
    start, end = "<!-- settings-table:start -->\n", "<!-- settings-table:end -->"
    head, rest = text.split(start, 1)
    readme.write_text(head + start + "\n".join(rows()) + "\n" + end + rest.split(end, 1)[1], encoding="utf-8")


if __name__ == "__main__":
    if "--write" in sys.argv[1:]:
        write_readme(Path(__file__).resolve().parents[1] / "README.md")
    else:
        print("\n".join(rows()))
