"""Write every message model as JSON Schema into schemas/json/ (run after changing schemas/)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from schemas.export import write_all  # noqa: E402

if __name__ == "__main__":
    for path in write_all():
        print(path)
