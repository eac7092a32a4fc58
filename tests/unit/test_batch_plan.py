"""Planning a batch at the client: items, their ids and identities, and the errors for bad sources."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from pipeline.errors import InvalidInput
from pipeline.settings import load_settings
from schemas import Intent, JobParams
from workers.batch import _sha, default_batch_id, document_id_for, generation_key, plan_manifest, plan_paths

OPTIONS = {"instruction": "Summarize this contract.", "intent": Intent.summarize, "params": JobParams(),
           "max_bytes": 1000}


def _tree(root: Path) -> None:
    for rel, data in {"a/contract.md": b"# A\nterms", "b/contract.md": b"# B\nterms", "top.txt": b"text",
                      ".git/config": b"x", "a/.DS_Store": b"x", "big.md": b"x" * 2000, "notes.docx": b"PK"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def test_a_folder_becomes_items_keyed_by_their_path_under_the_root(tmp_path: Path) -> None:
    _tree(tmp_path)
    plan = plan_paths([tmp_path], **OPTIONS)
    by_id = {item.custom_id: item for item in plan.items}
    assert sorted(by_id) == ["a/contract.md", "b/contract.md", "big.md", "notes.docx", "top.txt"], "no hidden files"
    contract = by_id["a/contract.md"]
    assert contract.raw is None, "a file's bytes are not held by the plan"
    assert contract.content_sha == hashlib.sha256(b"# A\nterms").hexdigest() and contract.problem is None
    assert contract.read() == b"# A\nterms"
    # a file the client cannot use is that item's problem, not the batch's end
    assert "over CONVEYOR_BATCH_MAX_DOCUMENT_BYTES" in (by_id["big.md"].problem or "")
    assert "unsupported document type '.docx'" in (by_id["notes.docx"].problem or "")
    assert plan.root == tmp_path.resolve()


def test_document_ids_come_from_the_path_and_never_collide() -> None:
    assert document_id_for("a/contract.md") == "a:contract.md"
    assert document_id_for("b/contract.md") == "b:contract.md"
    odd = {document_id_for(p) for p in ("x y.md", "x_y.md", "x?y.md", "é.md")}
    assert len(odd) == 4, "slugging two different paths to one id gets a hash suffix"
    long = document_id_for("d/" * 80 + "f.md")
    assert len(long) <= 128


def test_files_from_two_folders_share_their_deepest_common_root(tmp_path: Path) -> None:
    _tree(tmp_path)
    plan = plan_paths([tmp_path / "a", tmp_path / "b", tmp_path / "top.txt"], **OPTIONS)
    assert sorted(i.custom_id for i in plan.items) == ["a/contract.md", "b/contract.md", "top.txt"]


def test_a_missing_path_or_no_path_is_refused_as_a_whole(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no such file or directory"):
        plan_paths([tmp_path / "nope"], **OPTIONS)
    with pytest.raises(InvalidInput, match="at least one folder"):
        plan_paths([], **OPTIONS)


def test_a_manifest_names_documents_by_path_or_text_and_bad_lines_by_number(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "x.md").write_text("# X\nterms")
    manifest = tmp_path / "batch.jsonl"
    manifest.write_text('{"custom_id": "one", "document": "docs/x.md"}\n\n'
                        '{"custom_id": "two", "text": "inline contract", "intent": "risk", '
                        '"instruction": "What are the risks?"}\n')
    plan = plan_manifest(manifest, **OPTIONS)
    one, two = plan.items
    assert (one.custom_id, one.read(), one.name) == ("one", b"# X\nterms", "docs/x.md")
    assert (two.raw, two.intent, two.instruction, two.name) == (b"inline contract", Intent.risk,
                                                                "What are the risks?", "two.txt")
    manifest.write_text('{"custom_id": "one", "text": "a"}\n{"custom_id": "one", "text": "b"}\n')
    with pytest.raises(InvalidInput, match=r"batch.jsonl:2: custom_id 'one' appears twice"):
        plan_manifest(manifest, **OPTIONS)
    manifest.write_text('{"custom_id": "one"}\n')
    with pytest.raises(InvalidInput, match=r"batch.jsonl:1: .*exactly one of 'document'"):
        plan_manifest(manifest, **OPTIONS)


def test_the_same_source_is_the_same_batch_and_identity_follows_content_and_model(tmp_path: Path) -> None:
    _tree(tmp_path)
    first, again = plan_paths([tmp_path], **OPTIONS), plan_paths([tmp_path], **OPTIONS)
    assert default_batch_id(first, "t", "Summarize.", Intent.summarize) == default_batch_id(
        again, "t", "Summarize.", Intent.summarize)
    assert default_batch_id(first, "t", "Summarize.", Intent.summarize) != default_batch_id(
        first, "other", "Summarize.", Intent.summarize)
    extractive = generation_key(load_settings(data_dir=tmp_path), Intent.summarize)
    llm = generation_key(load_settings(data_dir=tmp_path, llm_base_url="http://127.0.0.1:1/v1"), Intent.summarize)
    assert extractive == ("summarize/v2", "extractive") and llm == ("summarize/v2", "gpt-4o-mini")
    assert _sha("a", "sha1", *extractive) != _sha("a", "sha1", *llm), "a new model runs the items again"


def test_a_file_changed_or_removed_after_planning_is_that_items_problem(tmp_path: Path) -> None:
    """The bytes sent are the bytes hashed: a file edited between planning and sending is not sent under
    the old identity; the item gets a problem (its dead letter) and the others go on."""
    _tree(tmp_path)
    plan = plan_paths([tmp_path], **OPTIONS)
    by_id = {item.custom_id: item for item in plan.items}
    (tmp_path / "a" / "contract.md").write_bytes(b"# A\nother terms")
    (tmp_path / "top.txt").unlink()
    assert by_id["a/contract.md"].read() is None
    assert "changed while the batch was being submitted" in (by_id["a/contract.md"].problem or "")
    assert by_id["top.txt"].read() is None and "cannot read top.txt" in (by_id["top.txt"].problem or "")
    assert by_id["b/contract.md"].read() is not None and by_id["b/contract.md"].problem is None
