"""The bounded memo the intent stage and the injection detector share."""

from __future__ import annotations

import threading

from pipeline.memo import LruMemo, text_key


def test_keeps_the_entries_used_last() -> None:
    memo: LruMemo[int] = LruMemo(2)
    memo.put_many({text_key("a"): 1, text_key("b"): 2})
    assert memo.get(text_key("a")) == 1  # "a" is now the most recent, "b" the oldest
    memo.put(text_key("c"), 3)
    assert memo.get_many([text_key("a"), text_key("b"), text_key("c")]) == {text_key("a"): 1, text_key("c"): 3}
    assert len(memo) == 2


def test_size_zero_remembers_nothing() -> None:
    memo: LruMemo[str] = LruMemo(0)
    memo.put(text_key("x"), "y")
    assert memo.get(text_key("x")) is None
    assert len(memo) == 0


def test_key_is_a_digest_not_the_text() -> None:
    assert text_key("contract") == text_key("contract") != text_key("Contract")
    assert len(text_key("x" * 10_000)) == 16
    assert text_key("\ud800") != text_key("")  # a lone surrogate from a bad decode still has a key


def test_stays_bounded_under_threads() -> None:
    memo: LruMemo[int] = LruMemo(50)

    def fill(start: int) -> None:
        for i in range(start, start + 500):
            memo.put(text_key(str(i)), i)
            memo.get(text_key(str(i - 1)))

    threads = [threading.Thread(target=fill, args=(n * 1000,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(memo) == 50
