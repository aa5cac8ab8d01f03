"""The shared analysis pass, feature statistics, top / quantile examples and the feature activation
database (``sae query``), each checked against a brute-force dense numpy computation on a tiny
text-like cache (documents spanning two rows, padding, special tokens) and two tiny SAEs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sae_core.checkpoint import find_checkpoints, load_sae
from sae_core.checkpoint.weights import load_weights, save_weights
from sae_core.protocols import ActivationBatch, CacheMetadata
from sae_core.stores import open_reader, open_writer
from sae_core.train import expand, run_training
from safetensors.numpy import load_file

T, D, N_ROWS = 6, 8, 120
DEAD, DENSE = (0, 1, 2), 5  # latents forced never to fire / to fire on every token


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, Path]:
    """(cache, run): rows are 2 windows of one document each; slot 0 is a special token (not
    valid), some last slots are padding; two TopK SAEs (k=2, k=4) on it."""
    root = tmp_path_factory.mktemp("db")
    meta = CacheMetadata(adapter="t", model="m", layers=["a"], d_model=D, dtype="float32", tokens_per_example=T,
                         token_kinds=["token"] * T, dataset={"spec": "synthetic"})
    rng = np.random.default_rng(0)
    w = open_writer(root / "c", meta, shard_examples=50)
    for lo in range(0, N_ROWS, 40):
        rows = np.arange(lo, lo + 40)
        valid = np.ones((40, T), dtype=bool)
        valid[:, 0] = False  # a [CLS]-like special token
        valid[rows % 7 == 0, T - 1] = False  # padding
        positions = (rows[:, None] % 2) * T + np.arange(T)[None, :] - 1  # position in the document
        positions[:, 0] = -1
        w.write(ActivationBatch(acts=torch.from_numpy(rng.standard_normal((40, 1, T, D), dtype=np.float32)).exp(),
                                example_ids=rows // 2, token_ids=rng.integers(0, 50, (40, T)).astype(np.int32),
                                valid=valid, positions=positions.astype(np.int32)))
    cache = w.close()
    cfg = expand(str(cache), D, {"layer": "a", "tokens": "token", "batch_size": 64},
                 {"arch": "topk", "k": [2, 4], "d_sae": 16}, {"steps": 20}, str(root / "run"))
    out = run_training(cfg, progress=False)
    for ckpt in find_checkpoints(out):  # make dead and dense latents certain
        weights = load_weights(ckpt / "sae.safetensors")
        weights["W_enc"][:, list(DEAD)] = 0
        weights["b_enc"][list(DEAD)] = -1e4
        weights["b_enc"][DENSE] = 1e3
        save_weights(ckpt / "sae.safetensors", weights)
    return cache, out


def _brute(cache: Path, ckpt: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense codes (n, T, d_sae) zero off the SAE's tokens, index (n, T), keep (n, T)."""
    reader = open_reader(cache)
    acts, index = reader.read_examples(0, reader.n_examples, layers=[0])
    with torch.no_grad():
        f = load_sae(ckpt).encode(acts[:, 0]).numpy()  # (n, T, d_sae)
    keep = index["valid"].astype(bool)
    return f * keep[..., None], index, keep


@pytest.fixture(scope="module")
def analysed(run) -> tuple[Path, list[Path]]:
    from conftest import cli_runner

    cache, out = run
    code, _, err = cli_runner()("analyze", str(out), "--k", "5", "--option", "quantile_m=3", "--option", "quantile_bands=4",
                                "--only", "feature-stats", "--only", "top-examples", "--only", "quantile-examples", "-q")
    assert code == 0, err
    assert "fewer than 20,000 tokens" in err and err.count("warning") == 1  # one line for the run
    return cache, find_checkpoints(out)


def test_feature_stats_match_brute_force(analysed) -> None:
    cache, ckpts = analysed
    for ckpt in ckpts:
        f, _, keep = _brute(cache, ckpt)
        tokens = f[keep]  # (m, d_sae)
        fires = tokens != 0
        stats = load_file(str(ckpt / "feature_stats.safetensors"))
        summary = json.loads((ckpt / "feature_stats.json").read_text())
        count = fires.sum(0)
        assert 0 < (count == 0).mean() < 1 and 0 < (count / len(tokens) > 0.1).mean() < 1  # both cases present
        np.testing.assert_allclose(stats["frequency"], fires.mean(0), rtol=1e-6)
        np.testing.assert_allclose(stats["max_activation"], np.abs(tokens).max(0), rtol=1e-6)
        mean = np.abs(tokens).sum(0) / np.maximum(count, 1)
        np.testing.assert_allclose(stats["mean_activation"], mean, rtol=1e-5)
        np.testing.assert_allclose(stats["positive_fraction"], (tokens > 0).sum(0) / np.maximum(count, 1), rtol=1e-6)
        assert summary["dead_frac"] == pytest.approx((count == 0).mean())  # never fired, not "ever fired"
        assert summary["dense_frac"] == pytest.approx((fires.mean(0) > 0.1).mean())
        assert summary["mean_l0"] == pytest.approx(fires.sum(1).mean())  # firings per analysed token
        assert summary["split"] == "all" and summary["n_rows"] == N_ROWS and summary["n_tokens"] == int(keep.sum())
        assert int(stats["act_hist_counts"].sum()) == int(fires.sum())


def _row_scores(f: np.ndarray, latent: int) -> np.ndarray:
    return np.abs(f[:, :, latent]).max(1)  # (n,): an example's score is its strongest token


def test_top_examples_and_db_top_match_brute_force(analysed) -> None:
    from sae_core import open_activation_db

    cache, ckpts = analysed
    for ckpt in ckpts:
        f, index, _ = _brute(cache, ckpt)
        top = load_file(str(ckpt / "top_examples.safetensors"))
        meta = json.loads((ckpt / "top_examples.json").read_text())
        assert (meta["split"], meta["n_rows"]) == ("all", N_ROWS)
        db = open_activation_db(ckpt)
        for latent in range(f.shape[-1]):
            score = _row_scores(f, latent)
            order = np.argsort(-score, kind="stable")[:5]
            order = order[score[order] > 0]
            n = len(order)
            assert top["rows"][latent][:n].tolist() == order.tolist() and (top["rows"][latent][n:] == -1).all()
            np.testing.assert_allclose(top["values"][latent][:n], score[order], rtol=1e-6)
            np.testing.assert_allclose(top["token_acts"][latent][:n], f[order, :, latent].astype(np.float16))
            assert (top["token_ids"][latent][:n] == index["token"][order]).all()
            hits = db.top(latent, 5)
            assert hits.row.tolist() == order.tolist() and hits.example.tolist() == (order // 2).tolist()
            np.testing.assert_allclose(hits.score, score[order], rtol=1e-6)
            best = np.abs(f[order, :, latent]).argmax(1)
            assert hits.slot.tolist() == best.tolist()
            assert hits.token_id.tolist() == index["token"][order, best].tolist()
            np.testing.assert_allclose(db.token_acts(latent, order), f[order, :, latent], rtol=1e-6)


def test_quantile_examples_match_brute_force(analysed) -> None:
    cache, ckpts = analysed
    for ckpt in ckpts:
        f, index, _ = _brute(cache, ckpt)
        q = load_file(str(ckpt / "quantile_examples.safetensors"))
        meta = json.loads((ckpt / "quantile_examples.json").read_text())
        assert meta["band_edges"] == [0.0, 0.25, 0.5, 0.75, 1.0] and meta["m"] == 3 and meta["split"] == "all"
        assert meta["n_tokens"] == int(index["valid"].sum())
        assert q["token_acts"].shape == (16, 4, 3, T) and q["token_acts"].dtype == np.float16
        for latent in range(f.shape[-1]):
            score = _row_scores(f, latent)
            peak = score.max()
            for b in range(4):
                lo, hi = b / 4 * peak, (b + 1) / 4 * peak
                members = np.flatnonzero((score > lo) & (score <= hi)) if peak > 0 else np.zeros(0, dtype=int)
                assert q["band_counts"][latent, b] == len(members)
                rows = q["rows"][latent, b]
                got = rows[rows >= 0]
                assert len(got) == min(3, len(members)) and set(got) <= set(members) and len(set(got)) == len(got)
                np.testing.assert_allclose(q["values"][latent, b][: len(got)], score[got], rtol=1e-6)
                np.testing.assert_allclose(q["token_acts"][latent, b][: len(got)], f[got, :, latent].astype(np.float16))
                assert (q["token_ids"][latent, b][: len(got)] == index["token"][got]).all()
                assert (q["examples"][latent, b][: len(got)] == got // 2).all()


def test_db_queries_match_brute_force(analysed) -> None:
    from sae_core import open_activation_db

    cache, ckpts = analysed
    f, index, keep = _brute(cache, ckpts[0])
    db = open_activation_db(ckpts[0])
    tokens = f[keep]  # (m, d_sae): token number i is the i-th kept token in row-major order
    r, slot = np.nonzero(keep)
    assert db.n_tokens == len(tokens) and db.n_rows == N_ROWS
    np.testing.assert_allclose(db.frequency(), (tokens != 0).mean(0))
    for latent in (3, DENSE, 9):
        tok, val = db.activations(latent)
        assert tok.tolist() == np.flatnonzero(tokens[:, latent]).tolist()
        np.testing.assert_array_equal(val, tokens[tok, latent])
        table = db.token_table(tok)
        assert table["row"].tolist() == r[tok].tolist() and table["slot"].tolist() == slot[tok].tolist()
        assert (table["position"] == index["position"][r[tok], slot[tok]]).all()
        firing_rows = np.flatnonzero(_row_scores(f, latent) > 0)
        sample = db.sample(latent, 7, seed=1)
        assert len(sample) == min(7, len(firing_rows)) and set(sample.row) <= set(firing_rows)
        assert sample.row.tolist() == db.sample(latent, 7, seed=1).row.tolist()
        bands = db.quantiles(latent, 4, 3, seed=0)
        q = load_file(str(ckpts[0] / "quantile_examples.safetensors"))
        assert [b.count for b in bands] == q["band_counts"][latent].tolist()
        for b, band in enumerate(bands):  # the file and the query draw the same examples
            assert band.hits.row.tolist() == [r for r in q["rows"][latent, b].tolist() if r >= 0]
    assert all(len(db.activations(d)[0]) == 0 for d in DEAD)
    assert all(b.count == 0 and not len(b.hits) for b in db.quantiles(DEAD[0], 4, 3))  # never fired: empty views
    assert not len(db.top(DEAD[0], 3)) and not len(db.sample(DEAD[0], 3)) and not db.token_acts(DEAD[0], [1]).any()
    # which latents fire at document 7, position 2: row 14 or 15 holds it
    row, col = next((rr, c) for rr in (14, 15) for c in range(T) if index["position"][rr, c] == 2 and keep[rr, c])
    at = db.latents_at(7, 2)
    want = np.flatnonzero(f[row, col])
    assert sorted(at.latent.tolist()) == sorted(want.tolist()) and set(at.row.tolist()) == {row}
    np.testing.assert_allclose(np.abs(at.value), np.sort(np.abs(f[row, col, want]))[::-1])
    whole = db.latents_at(7)  # every analysed token of the document: both of its rows
    assert len(whole.latent) == int((f[14:16] != 0).sum()) and set(whole.row.tolist()) == {14, 15}


def test_shared_pass_reads_the_cache_once_for_every_sae(run, monkeypatch) -> None:
    from sae_core import analyse_run, sparse_consumer
    from sae_core.protocols import PassAnalysis
    from sae_core.stores.local.reader import LocalReader

    cache, out = run
    reads: list[tuple[int, int]] = []
    original = LocalReader.read_examples

    def counted(self, lo, hi, *a, **kw):
        reads.append((lo, hi))
        return original(self, lo, hi, *a, **kw)

    monkeypatch.setattr(LocalReader, "read_examples", counted)
    analyse_run(out, only=["feature-stats", "top-examples", "activation-db"], progress=False)
    assert sum(hi - lo for lo, hi in reads) == N_ROWS  # every row read once, not once per SAE or analysis

    class Cooc:  # the shape of a sparse accumulator (e.g. latent co-occurrence)
        def __init__(self) -> None:
            self.tokens, self.n = [], 0

        def update(self, token, latent, n_tokens) -> None:
            self.tokens.append(token.clone())
            self.n += n_tokens

        def result(self):
            return {"n_tokens": self.n, "nnz": int(sum(len(t) for t in self.tokens))}

    class Plugin(PassAnalysis):
        name = "cooc"

        def consumer(self, ctx):
            return sparse_consumer(Cooc())

    ckpt = find_checkpoints(out)[0]
    from sae_core.protocols import AnalysisContext

    got = Plugin().run(AnalysisContext(checkpoint=ckpt, sae=load_sae(ckpt), reader=open_reader(cache)))
    f, _, keep = _brute(cache, ckpt)
    assert got == {"n_tokens": int(keep.sum()), "nnz": int((f != 0).sum())}


def test_token_budget_split_and_many_shards(run, tmp_path, monkeypatch) -> None:
    import shutil

    from conftest import cli_runner
    from sae_core import open_activation_db
    from sae_core.analyses import shared_pass

    cache, out = run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    ckpt = find_checkpoints(copy)[0]
    monkeypatch.setattr(shared_pass, "CHUNK_VALUES", 4 * T * 16)  # chunks of 4 rows: several shards
    code, _, err = cli_runner()("analyze", str(ckpt), "--only", "feature-stats", "--only", "quantile-examples", "-q",
                                "--option", "max_tokens=100", "--option", "db_shard_entries=40", "--option", "db_dtype=float16")
    assert code == 0, err
    f, _, keep = _brute(cache, ckpt)
    per_row = keep.sum(1).cumsum()
    n_rows = int(np.searchsorted(per_row, 100, side="right"))  # whole rows holding at most 100 tokens
    summary = json.loads((ckpt / "feature_stats.json").read_text())
    assert (summary["n_rows"], summary["n_tokens"]) == (n_rows, int(per_row[n_rows - 1]))
    db = open_activation_db(ckpt)
    assert len(db.manifest["shards"]) > 2 and db.n_tokens == summary["n_tokens"]
    tokens = f[:n_rows][keep[:n_rows]]
    assert db.manifest["value_dtype"] == "float16"
    q = load_file(str(ckpt / "quantile_examples.safetensors"))  # built in blocks across shards
    for latent in range(16):
        for b, band in enumerate(db.quantiles(latent, 10, 5)):
            assert band.hits.row.tolist() == [r for r in q["rows"][latent, b].tolist() if r >= 0]
            assert band.count == q["band_counts"][latent, b]
    for latent in range(16):  # shards split the token range: every query still sees all of it
        tok, val = db.activations(latent)
        assert tok.tolist() == np.flatnonzero(tokens[:, latent]).tolist()
        np.testing.assert_allclose(val, tokens[tok, latent], rtol=1e-3)
    np.testing.assert_allclose(db.frequency(), (tokens != 0).mean(0))
    code, _, err = cli_runner()("analyze", str(ckpt), "--only", "feature-stats", "-q", "--option", "split=val")
    assert code == 0, err
    assert json.loads((ckpt / "feature_stats.json").read_text())["split"] == "val"
    from sae_core.protocols import AnalysisContext

    ctx = AnalysisContext(checkpoint=ckpt, sae=load_sae(ckpt), reader=open_reader(cache), options={"max_tokens": "100"})
    assert ctx.rows().tolist() == list(range(n_rows))  # plugins' default rows: the same budget
    for bad, message in (("db_dtype=int8", "db_dtype= must be one of"), ("max_tokens=0", "max_tokens= must be > 0")):
        code, _, err = cli_runner()("analyze", str(ckpt), "--only", "activation-db", "-q", "--option", bad)
        assert code == 1 and message in err and "Traceback" not in err


def test_interrupted_db_never_looks_complete(run, tmp_path, monkeypatch) -> None:
    import shutil

    from sae_core import SAEError, analyse_run, open_activation_db
    from sae_core.analyses import shared_pass
    from sae_core.analyses.activation_db import ActivationDBWriter

    _, out = run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    ckpt = find_checkpoints(copy)[0]
    shutil.rmtree(ckpt / "activations", ignore_errors=True)
    original = ActivationDBWriter._flush
    calls = []

    def crash(self):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        original(self)

    monkeypatch.setattr(ActivationDBWriter, "_flush", crash)
    monkeypatch.setattr(shared_pass, "CHUNK_VALUES", 4 * T * 16)
    with pytest.raises(OSError):
        analyse_run(ckpt, only=["activation-db"], options={"db_shard_entries": "40"}, progress=False)
    assert not (ckpt / "activations").exists() and not list(ckpt.glob(".activations*"))
    with pytest.raises(SAEError, match="no activation database"):
        open_activation_db(ckpt)
    (ckpt / "activations").mkdir()  # e.g. a copy that lost its manifest
    with pytest.raises(SAEError, match="incomplete"):
        open_activation_db(ckpt)


def test_query_cli(analysed, run_cli) -> None:
    from sae_core import open_activation_db

    _, ckpts = analysed
    ckpt = ckpts[0]
    db = open_activation_db(ckpt)
    code, out, err = run_cli("query", str(ckpt), "--feature", "9", "--top", "3", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert [r["row"] for r in doc["top"]] == db.top(9, 3).row.tolist()
    assert doc["frequency"] == pytest.approx(db.frequency()[9])
    code, out, err = run_cli("query", str(ckpt), "--feature", "9", "--quantiles", "4", "--per-band", "2", "--json")
    assert code == 0, err
    assert [b["count"] for b in json.loads(out)["bands"]] == [b.count for b in db.quantiles(9, 4, 2)]
    code, out, err = run_cli("query", str(ckpt), "--feature", "9", "--random", "4", "--seed", "3", "--json")
    assert code == 0, err
    assert [r["row"] for r in json.loads(out)["random"]] == db.sample(9, 4, seed=3).row.tolist()
    code, out, err = run_cli("query", str(ckpt), "--example", "7", "--position", "2", "--json")
    assert code == 0, err
    assert [r["latent"] for r in json.loads(out)["firings"]] == db.latents_at(7, 2).latent.tolist()
    code, out, err = run_cli("query", str(ckpt), "--feature", "9")  # the table
    assert code == 0 and "top examples: 10" in out and "value" in out.splitlines()[3]
    code, out, _ = run_cli("query", str(ckpt), "--example", "7")
    assert code == 0 and "latent" in out
    for args, message in ((["--feature", "99"], "out of range"), ([], "exactly one of"),
                          (["--feature", "1", "--example", "2"], "exactly one of"),
                          (["--feature", "1", "--top", "2", "--random", "2"], "at most one"),
                          (["--example", "9999"], "not among"), (["--feature", "1", "--top", "0"], "--top must be")):
        code, _, err = run_cli("query", str(ckpt), *args)
        assert code == 1 and message in err and "Traceback" not in err, (args, err)
