"""A logger whose output a test can read, through the PII filter every Conveyor handler carries."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from pipeline.guard.pii import PiiRedactingFilter


@contextmanager
def capture_logger(name: str, formatter: logging.Formatter) -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """``(logger, stream)``: records of ``name`` formatted into ``stream``, not propagated; removed after."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(PiiRedactingFilter())
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)
