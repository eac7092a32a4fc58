"""The README stays true: its first commands, its settings table, its stage names."""

from __future__ import annotations

from pipeline.settings import ENV_PREFIX, Settings
from tests.conftest import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")


def test_readme_opens_with_the_main_job_and_the_test_command() -> None:
    first_block = README.split("```bash", 1)[1].split("```", 1)[0]
    lines = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert lines == ["bash scripts/bootstrap.sh && .venv/bin/conveyor demo", "bash scripts/test.sh"]
    assert "bash scripts/test.sh" in (REPO / ".ci" / "run").read_text()


def test_every_setting_is_documented() -> None:
    names = [ENV_PREFIX + name.upper() for name in Settings.model_fields]
    missing = [name for name in names if f"`{name}`" not in README]
    assert not missing, f"add to the README's configuration table (scripts/settings_table.py): {missing}"


def test_the_metrics_table_is_the_exporters_table() -> None:
    from workers.metrics import SPEC

    section = README.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines()
            if line.startswith("| `conveyor_")]
    documented = {name.strip("`"): (kind, labels, meaning) for name, kind, labels, meaning in rows}
    assert documented == {name: (s.kind, ", ".join(s.labels) or "—", s.help) for name, s in SPEC.items()}
