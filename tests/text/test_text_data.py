"""Text data at scale: ``hf:`` datasets read lazily (saved Arrow, streamed files, the Hub streamed),
pretokenised ``input_ids`` used as they are, and seeded random-crop windows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sae_core.datasets import open_dataset
from sae_core.errors import DataError, SAEError
from sae_core.protocols import AdapterRequest
from sae_core.stores import open_reader
from sae_text.minilm import minilm_dir

TEXTS = ["sparse autoencoders find features", "the quick brown fox jumps over the lazy dog " * 8, "short",
         "residual streams carry information between blocks"]


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_dir())


def test_saved_dataset_is_read_lazily_and_pretokenised_ids_are_kept(run_cli, tmp_path: Path, tokenizer) -> None:
    """A save_to_disk dataset with an input_ids column: the ids are cached as given (a leading
    [CLS] is not doubled), without re-tokenising; ids outside the vocabulary are refused."""
    import datasets

    ids = [[101, *tokenizer(t, add_special_tokens=False)["input_ids"]] for t in TEXTS]
    datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"input_ids": ids, "text": ["x"] * len(ids)}),
        "test": datasets.Dataset.from_dict({"input_ids": [[5, 6]], "text": ["y"]}),
    }).save_to_disk(str(tmp_path / "pretok"))
    ds = open_dataset(f"hf:{tmp_path / 'pretok'}", "text")
    assert len(ds) == 4 and ds.describe()["pretokenised"] and ds[1].data == ids[1]
    assert [e.id for e in ds.iter_from(2)] == [2, 3]
    assert open_dataset(f"hf:{tmp_path / 'pretok'}", "text", field="text")[0].data == "x"
    assert len(open_dataset(f"hf:{tmp_path / 'pretok'}", "text", split="test")) == 1
    with pytest.raises(DataError, match="no split 'dev'"):
        open_dataset(f"hf:{tmp_path / 'pretok'}", "text", split="dev")

    code, out, err = run_cli("cache", "--adapter", "hf", "--model", "minilm", "--data", f"hf:{tmp_path / 'pretok'}",
                             "--out", str(tmp_path / "c"), "--layers", "1", "--context-size", "64", "-q")
    assert code == 0, err
    reader = open_reader(Path(out.strip().splitlines()[-1]))
    _, index = reader.read_examples(0, reader.n_examples)
    for row in range(reader.n_examples):
        doc = int(index["example"][row, 0])
        body = index["token"][row][index["position"][row] >= 0]
        start = int(index["position"][row][index["position"][row] >= 0][0])
        assert list(body) == ids[doc][1:][start : start + len(body)]
        assert index["token"][row, 0] == 101 and index["token"][row, 1] != 101
    assert reader.meta.dataset["pretokenised"] is True

    datasets.Dataset.from_dict({"input_ids": [[1, 2, 40000]]}).save_to_disk(str(tmp_path / "bad"))
    code, _, err = run_cli("cache", "--adapter", "hf", "--model", "minilm", "--data", f"hf:{tmp_path / 'bad'}",
                           "--out", str(tmp_path / "c2"), "--layers", "1", "-q")
    assert code == 1 and "token id 40000, outside the model's vocabulary of 30522" in err and "Traceback" not in err


def test_local_files_are_streamed(tmp_path: Path) -> None:
    import datasets

    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"text": t, "n": i}) + "\n" for i, t in enumerate(TEXTS)) + "\n")
    ds = open_dataset(f"hf:{tmp_path / 'a.jsonl'}", "text")
    assert type(ds).__name__ == "StreamedTextDataset" and len(ds) == 4
    assert [e.data for e in ds.iter_from(1)] == TEXTS[1:]
    assert ds[2].data == TEXTS[2] and ds[3].data == TEXTS[3] and ds[0].data == TEXTS[0]  # random access re-reads
    assert len(open_dataset(f"hf:{tmp_path / 'a.jsonl'}", "text", limit=2)) == 2
    assert [e.data for e in open_dataset(f"hf:{tmp_path / 'a.jsonl'}", "text", limit=2).iter_from(0)] == TEXTS[:2]
    with pytest.raises(IndexError):
        ds[4]
    folder = tmp_path / "parquet"
    folder.mkdir()
    datasets.Dataset.from_dict({"input_ids": [[7, 8, 9], [10]]}).to_parquet(str(folder / "p0.parquet"))
    datasets.Dataset.from_dict({"input_ids": [[11, 12]]}).to_parquet(str(folder / "p1.parquet"))
    pq = open_dataset(f"hf:{folder}", "text")
    assert len(pq) == 3 and [e.data for e in pq.iter_from(0)] == [[7, 8, 9], [10], [11, 12]]
    (tmp_path / "lines.txt").write_text("one line\nanother line\n")
    assert [e.data for e in open_dataset(f"hf:{tmp_path / 'lines.txt'}", "text").iter_from(0)] == ["one line", "another line"]
    before = ds.fingerprint()
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": "changed"}) + "\n")
    assert open_dataset(f"hf:{tmp_path / 'a.jsonl'}", "text").fingerprint() != before
    (tmp_path / "t.csv").write_text("text\nhello\n")
    with pytest.raises(DataError, match="pass --max-examples N"):
        open_dataset(f"hf:{tmp_path / 't.csv'}", "text")
    with pytest.raises(DataError, match="no column 'body'"):
        open_dataset(f"hf:{tmp_path / 'a.jsonl'}", "text", field="body")
    with pytest.raises(DataError, match="no such file"):
        open_dataset(f"hf:{tmp_path / 'missing' / 'x.jsonl'}", "text")


def test_hub_dataset_is_streamed(monkeypatch: pytest.MonkeyPatch, run_cli, tmp_path: Path) -> None:
    """A Hub id: load_dataset(..., streaming=True) (mocked at the network boundary with a real
    IterableDataset); only the records the cache needs are read, and a size is required."""
    import datasets

    calls: list[dict] = []
    reads = []

    def records():
        for i in range(1000):
            reads.append(i)
            yield {"text": f"document number {i} about sparse features", "id": i}

    def fake_load_dataset(path, **kwargs):
        calls.append({"path": path, **kwargs})
        stream = datasets.IterableDataset.from_generator(records)
        if kwargs.get("name") == "sized":
            stream.info.splits = datasets.SplitDict({"validation": datasets.SplitInfo(name="validation", num_examples=1000)})
        return stream

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    with pytest.raises(DataError, match="pass --max-examples N"):
        open_dataset("hf:someone/web-text", "text")
    assert calls[-1] == {"path": "someone/web-text", "name": None, "split": "train", "revision": None, "streaming": True}
    sized = open_dataset("hf:someone/web-text", "text", config="sized", split="validation", revision="v1")
    assert len(sized) == 1000 and calls[-1]["revision"] == "v1" and calls[-1]["split"] == "validation"
    reads.clear()
    code, out, err = run_cli("cache", "--adapter", "hf", "--model", "minilm", "--data", "hf:someone/web-text",
                             "--out", str(tmp_path), "--layers", "1", "--max-examples", "5", "--context-size", "16", "-q")
    assert code == 0, err
    assert len(reads) <= 5 + 2  # the first record (columns) and the five documents: never the whole stream
    reader = open_reader(Path(out.strip().splitlines()[-1]))
    examples = reader.read_examples(0, reader.n_examples)[1]["example"][:, 0]
    assert reader.meta.dataset["source"] == "hub (streamed)" and set(examples) == set(range(5))
    adapter_ds = open_dataset("hf:someone/web-text", "text", limit=5)
    assert [e.id for e in adapter_ds.iter_from(3)] == [3, 4]  # a resumed cache skips the finished records


def test_random_crop_is_seeded_and_resumable(tmp_path: Path) -> None:
    import dataclasses

    from sae_text.adapters.hf import HFAdapter
    from sae_text.adapters.options import WindowOptions

    (tmp_path / "docs.txt").write_text("\n\n".join(TEXTS))
    ds = open_dataset(f"text:{tmp_path / 'docs.txt'}", "text")
    adapter = HFAdapter(AdapterRequest(model="minilm", layers=["0"], context_size=16, options={"random_crop": "true"}))
    assert adapter.window_options == WindowOptions(random_crop=True)

    def starts(start: int = 0, **opts: object) -> dict[int, list[int]]:
        adapter.window_options = dataclasses.replace(WindowOptions(), **opts)
        out: dict[int, list[int]] = {}
        for w in adapter.windows(ds, start):
            out.setdefault(w.doc, []).append(int(w.positions[w.positions >= 0][0]))
        return out

    plain = starts()
    assert plain[1][:2] == [0, 14]  # windows of 14 body tokens from position 0
    crop = starts(random_crop=True)
    assert crop == starts(random_crop=True)
    assert len({tuple(starts(random_crop=True, seed=s)[1]) for s in range(5)}) > 1
    assert 0 < crop[1][0] < 14 and np.all(np.diff(crop[1]) == 14)  # the grid is shifted, windows stay contiguous
    assert crop[2] == [0]  # a document shorter than a window is kept whole
    one = [starts(random_crop=True, max_windows=1, seed=s)[1] for s in range(5)]
    assert all(len(v) == 1 for v in one) and max(v[0] for v in one) > 14  # one crop, anywhere in the document
    assert starts(1, random_crop=True) == {d: v for d, v in crop.items() if d >= 1}  # a resumed cache cuts the same windows
    with pytest.raises(SAEError, match="--opt max_windows_per_doc= must be >= 1"):
        HFAdapter(AdapterRequest(model="minilm", layers=["0"], options={"max_windows_per_doc": "0"}))


def test_iter_from_default_and_dataset_head(tmp_path: Path) -> None:
    """Dataset.iter_from reads in order from ``start``; a rank's DatasetHead stops at its block's end
    and keeps a streamed dataset sequential."""
    from sae_core.datasets import DatasetHead

    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(6)))
    listed = open_dataset(f"jsonl:{tmp_path / 'a.jsonl'}", "text")  # in memory: the default iter_from
    streamed = open_dataset(f"hf:{tmp_path / 'a.jsonl'}", "text")
    for ds in (listed, streamed):
        assert [e.data for e in ds.iter_from(4)] == ["doc 4", "doc 5"]
        head = DatasetHead(ds, 3)
        assert [e.id for e in head.iter_from(1)] == [1, 2] and list(head.iter_from(3)) == []
