"""``hf:PATH``: a Hugging Face ``datasets`` dataset saved with ``save_to_disk``."""

from __future__ import annotations

from typing import Any

from sae_core.datasets import check_options
from sae_core.errors import DataError

from sae_text.datasets.base import TextListDataset


def hf_text_dataset(arg: str | None, **options: Any) -> TextListDataset:
    check_options("hf", options, {"limit", "seed", "field", "split"})
    if not arg:
        raise DataError("hf: needs the directory written by datasets' save_to_disk, e.g. --data hf:/data/wiki")
    import datasets

    try:
        ds = datasets.load_from_disk(arg)
    except FileNotFoundError:
        raise DataError(f"hf:{arg}: not a dataset saved with save_to_disk (or it does not exist)") from None
    if isinstance(ds, datasets.DatasetDict):
        split = options.get("split") or ("train" if "train" in ds else next(iter(ds)))
        if split not in ds:
            raise DataError(f"hf:{arg}: no split {split!r}; splits: {', '.join(ds)}")
        ds = ds[split]
    field = options.get("field") or "text"
    if field not in ds.column_names:
        raise DataError(f"hf:{arg}: no column {field!r}; columns: {', '.join(ds.column_names)}; pass --field NAME")
    limit = options.get("limit")
    n = len(ds) if limit is None else min(len(ds), int(limit))
    texts = [str(t) for t in ds.select(range(n))[field]]
    spec = f"hf:{arg}" + (f"#{options['split']}" if options.get("split") else "")
    return TextListDataset(spec, texts, limit=limit)
