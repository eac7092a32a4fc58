"""Print the README's configuration table from the Settings model (one source of truth)."""

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


if __name__ == "__main__":
    print("\n".join(rows()))
