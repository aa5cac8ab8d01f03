"""The Python API that runs a model with SAEs attached (``sae_core.inference``): record, splice,
edit, on a tiny random causal HookedTransformer, the real MiniLM (a TransformerBridge encoder) and
tiny open_clip / timm ViTs. Exactness first: recorded features are the SAE's encode of the
activations caching sees; no edit with the error term kept changes nothing bit for bit; an SAE
that reconstructs exactly, spliced in, changes nothing; each edit moves the activations by exactly
what it asks, on the tokens the SAE reads only."""

from __future__ import annotations

from pathlib import Path

import helpers.shared_runs as shared_runs
import numpy as np
import pytest
import torch
from helpers.inference import perfect_sae
from sae_core.checkpoint import find_checkpoints, load_sae
from sae_core.errors import SAEError
from sae_core.inference import Ablate, Clamp, HookedModel, SAEHook, Scale, Steer

TEXTS = ["sparse autoencoders find features in the activations of language models layer after layer " * 2,
         "features of models"]


@pytest.fixture(scope="module")
def lm(tmp_path_factory) -> tuple[HookedModel, object]:
    _, run = shared_runs.lm_run(tmp_path_factory)
    return HookedModel.from_checkpoint(find_checkpoints(run)[0])


def _cached_view(model: HookedModel, inputs) -> torch.Tensor:
    """(b, T, d): the layer's activations as `sae cache` computes them for these windows."""
    attention = torch.from_numpy(inputs.attention).long()
    return model.adapter.forward_windows(inputs.data, attention)[:, 0]


def test_jackknife_of_a_mean_is_its_standard_error() -> None:
    from sae_core.inference.stats import jackknife, ratio

    x = np.random.default_rng(0).normal(size=50)
    value, se = jackknife(np.stack([x, np.ones(50)], 1), ratio(0, 1))
    assert value == pytest.approx(x.mean()) and se == pytest.approx(x.std(ddof=1) / 50**0.5)
    assert jackknife(np.array([[1.0, 2.0]]), ratio(0, 1)) == (0.5, None)  # one row: no error
    assert jackknife(np.zeros((3, 2)), ratio(0, 1)) == (None, None)  # 0/0: no value


def test_record_is_encode_of_cached_activations_on_the_tokens_trained_on(lm) -> None:
    model, sae = lm
    result = model.run(TEXTS, SAEHook(sae), output=False)
    inputs = result.inputs
    assert inputs.shape[1] == 16 and len(inputs.example) > 2 and set(inputs.example) == {0, 1}  # windows of 16
    feats = result.features[sae.cfg.name]
    rows, pos = np.nonzero(inputs.valid)
    assert feats.rows.tolist() == rows.tolist() and feats.positions.tolist() == pos.tolist()
    labels = {inputs.labels[r][p] for r, p in zip(rows, pos, strict=True)}
    assert not labels & {"[CLS]", "[SEP]", "[PAD]"}  # specials and padding are never read, as at training
    x = _cached_view(model, inputs)[torch.from_numpy(inputs.valid)]
    assert torch.equal(feats.dense(), sae.encode(x))
    values, _ = feats.top(3)
    assert values.shape == (len(rows), 3) and (values[:, :-1] >= values[:, 1:]).all()
    assert result.output.kind is None  # output=False: no logits computed


def test_no_edit_with_error_kept_changes_nothing_bit_for_bit(lm) -> None:
    model, sae = lm
    inputs = model.inputs(TEXTS)
    clean = model.run(inputs).output.logits
    assert torch.equal(model.run(inputs, SAEHook(sae, splice=True, keep_error=True)).output.logits, clean)
    f = model.run(inputs, SAEHook(sae), output=False).features[sae.cfg.name].dense()
    never = int(torch.nonzero(f.amax(0) == 0)[0])  # a feature that fires on none of these tokens
    ablated = model.run(inputs, SAEHook(sae, edits=[Ablate([never])])).output.logits
    assert torch.equal(ablated, clean)  # x + (f' − f) W_dec with f' = f: exactly x
    spliced = model.run(inputs, SAEHook(sae, splice=True)).output.logits
    assert not torch.allclose(spliced, clean, atol=1e-3)  # without the error term the SAE's loss shows


def test_perfect_sae_spliced_in_changes_nothing(lm) -> None:
    model, _ = lm
    inputs = model.inputs(TEXTS)
    clean = model.run(inputs).output.logits
    for layer in ("blocks.0.hook_resid_post", "blocks.1.hook_mlp_out"):
        out = model.run(inputs, SAEHook(perfect_sae(32, layer), splice=True)).output.logits
        assert torch.allclose(out, clean, atol=1e-6, rtol=0), layer


def test_edits_move_activations_by_exactly_what_they_ask(lm) -> None:
    """The activation after the SAE's layer, edited minus clean: Steer adds s·W_dec[i], Ablate
    removes f_i·W_dec[i], Clamp sets f_i to v, Scale multiplies it — on the SAE's tokens only."""
    model, sae = lm
    inputs = model.inputs(TEXTS)
    valid = torch.from_numpy(inputs.valid)
    x = _cached_view(model, inputs)
    f = sae.encode(x)  # (b, T, d_sae)
    i = int(f[valid].gt(0).sum(0).argmax())  # the feature that fires most
    w = sae.W_dec[i]

    def after(hook: SAEHook | None) -> torch.Tensor:
        seen = {}

        def grab(acts, _valid):
            seen["x"] = acts.clone()

        hooks = {} if hook is None else model.hooks([hook], inputs.kinds, {})
        model.run_hooks(inputs, {**hooks, "blocks.1.hook_resid_pre": grab}, output=False)
        return seen["x"]

    clean = after(None)
    fi = f[..., i : i + 1]  # (b, T, 1)
    expect = {
        "steer": (Steer(i, 3.0), 3.0 * w.expand_as(clean)),
        "ablate": (Ablate(i), -fi * w),
        "clamp": (Clamp(i, value=2.0), (2.0 - fi) * w),
        "scale": (Scale(i, factor=0.5), -0.5 * fi * w),
    }
    for name, (edit, delta) in expect.items():
        got = after(SAEHook(sae, edits=[edit])) - clean
        assert torch.allclose(got[valid], delta[valid], atol=1e-5), name
        assert torch.equal(got[~valid], torch.zeros_like(got[~valid])), name  # specials and padding untouched
    spliced = after(SAEHook(sae, splice=True, edits=[Ablate(i)]))
    g = f.clone()
    g[..., i] = 0
    assert torch.allclose(spliced[valid], sae.decode(g)[valid], atol=1e-5)  # the edited reconstruction itself


def test_saes_at_two_layers_apply_in_order_and_record_each(lm) -> None:
    model, sae = lm
    inputs = model.inputs(TEXTS)
    later = perfect_sae(32, "blocks.1.hook_resid_post")
    result = model.run(inputs, [SAEHook(sae, edits=[Steer(0, 5.0)]), SAEHook(later, name="later")])
    f_later = result.features["later"].dense()  # recorded on the activations downstream of the steered layer
    clean = model.run(inputs, [SAEHook(later, name="later")]).features["later"].dense()
    assert not torch.allclose(f_later, clean)
    assert torch.allclose(f_later[:, :32] - f_later[:, 32:], later.decode(f_later), atol=0)  # [relu(x), relu(−x)]
    with pytest.raises(SAEError, match="share the name"):
        model.run(inputs, [SAEHook(sae), SAEHook(sae)])
    with pytest.raises(SAEError, match=r"feature id\(s\) \[64\] out of range: the SAE has 64 features"):
        SAEHook(sae, edits=[Ablate(64)])


def test_generation_is_greedy_deterministic_and_steerable(lm) -> None:
    model, sae = lm
    a = model.generate("sparse autoencoders", max_new_tokens=6)
    assert a == model.generate("sparse autoencoders", max_new_tokens=6) and len(a.token_ids) == 6
    same = model.generate("sparse autoencoders", SAEHook(sae, splice=True, keep_error=True), max_new_tokens=6)
    assert same.token_ids == a.token_ids
    steered = model.generate("sparse autoencoders", SAEHook(sae, edits=[Steer(0, 50.0)]), max_new_tokens=6)
    assert steered.token_ids != a.token_ids


def test_minilm_real_model(tmp_path_factory) -> None:
    """The bundled MiniLM through TransformerBridge: recording equals encode of the cached
    activations ([CLS]/[SEP] excluded), the error-kept identity and the perfect splice hold on the
    sentence embedding, and generation is refused with a one-line reason."""
    _, run = shared_runs.minilm_run(tmp_path_factory)
    model, sae = HookedModel.from_checkpoint(find_checkpoints(run)[0])
    inputs = model.inputs(["Sparse autoencoders find features.", "A sentence encoder maps a text to one vector."])
    result = model.run(inputs, SAEHook(sae))
    assert result.output.kind == "embedding" and result.output.embedding.shape == (2, 384)
    x = _cached_view(model, inputs)[torch.from_numpy(inputs.valid)]
    assert torch.allclose(result.features[sae.cfg.name].dense(), sae.encode(x), atol=1e-6)
    assert inputs.labels[0][0] == "[CLS]" and not inputs.valid[:, 0].any()
    assert torch.equal(model.run(inputs, SAEHook(sae, splice=True, keep_error=True)).output.embedding,
                       result.output.embedding)
    perfect = model.run(inputs, SAEHook(perfect_sae(384, "blocks.3.hook_resid_post"), splice=True)).output.embedding
    assert torch.allclose(perfect, result.output.embedding, atol=1e-6, rtol=0)
    with pytest.raises(SAEError, match="is an encoder, not a causal language model"):
        model.generate("hello", SAEHook(sae, edits=[Steer(0, 1.0)]))


@pytest.mark.parametrize("name", ["clip", "timm"])
def test_vit_record_splice_and_identity(tmp_path_factory, name: str) -> None:
    """ViTs: features are recorded only on the SAE's token kind (cls for the clip SAE, patches for
    the timm one) and equal encode of the cached activations; identities hold on the embedding."""
    from sae_core.datasets import open_dataset

    _, run = shared_runs.vit_runs(tmp_path_factory)[name]
    model, sae = HookedModel.from_checkpoint(find_checkpoints(run)[0])
    ds = open_dataset("samples", "image", n=12)
    images = [ds[i].data for i in (0, 5)]
    result = model.run(images, SAEHook(sae))
    kind = sae.cfg.source.tokens
    feats = result.features[sae.cfg.name]
    kinds = np.array(result.inputs.kinds)
    assert set(kinds[feats.positions.numpy()]) == {kind} and len(feats.positions) == 2 * int((kinds == kind).sum())
    acts = model.adapter.forward_pixels(result.inputs.data)[:, 0]  # (b, T, d): what caching stores
    assert torch.allclose(feats.dense(), sae.encode(acts[:, kinds == kind].reshape(-1, acts.shape[-1])), atol=1e-5)
    clean = result.output.embedding
    assert torch.equal(model.run(images, SAEHook(sae, splice=True, keep_error=True)).output.embedding, clean)
    perfect = perfect_sae(sae.d_in, "blocks.1", "all")
    assert torch.allclose(model.run(images, SAEHook(perfect, splice=True)).output.embedding, clean, atol=1e-5, rtol=0)
    assert result.output.logit_scale == (pytest.approx(1 / 0.07) if name == "clip" else None)
    with pytest.raises(SAEError, match=r"cannot run its model with SAEs attached \(it does not implement generate\)"):
        model.generate("a prompt")


def test_plugin_adapter_through_the_protocol(tmp_path: Path, run_cli) -> None:
    """A third-party adapter (the example plugin's MLP) cannot run its model until it implements
    the protocol (a clear error); a subclass implementing make_inputs / cached_inputs /
    run_with_hooks gets recording, exact edits and the downstream metrics from sae-core."""
    import torch.nn.functional as F
    from sae_core.datasets import open_dataset
    from sae_core.inference.splice_eval import splice_metrics
    from sae_core.protocols import AdapterRequest
    from sae_core.protocols.running import ModelInputs, ModelOutput
    from sae_core.stores import open_reader
    from sae_example_plugin.components import MLPAdapter

    code, out, err = run_cli("cache", "--adapter", "mlp", "--model", "x", "--data", "gaussian:64", "--layers", "0",
                             "--out", str(tmp_path / "c"), "-q")
    assert code == 0, err
    cache = out.strip().splitlines()[-1]
    code, _, err = run_cli("train", "--data", cache, "--out", str(tmp_path / "run"), "--arch", "topk",
                           "--k", "2", "--exp-factor", "2", "--steps", "5", "--batch-size", "16", "-q")
    assert code == 0, err
    ckpt = find_checkpoints(tmp_path / "run")[0]
    with pytest.raises(SAEError, match="adapter 'mlp' cannot run its model with SAEs attached"):
        HookedModel.from_checkpoint(ckpt)

    class RunnableMLP(MLPAdapter):
        def _inputs(self, x: np.ndarray, example: np.ndarray) -> ModelInputs:
            return ModelInputs(data=torch.from_numpy(x), valid=np.ones((len(x), 1), dtype=bool), kinds=["token"],
                               example=example)

        def make_inputs(self, examples):
            return self._inputs(np.stack(examples).astype(np.float32), np.arange(len(examples)))

        def cached_inputs(self, index, dataset=None):
            ids = index["example"][:, 0]
            return self._inputs(np.stack([dataset[int(i)].data for i in ids]), ids)

        def run_with_hooks(self, inputs, hooks, *, output=True):
            h = inputs.data  # (b, 16)
            valid = torch.from_numpy(inputs.valid)
            for i, w in enumerate(self.weights):
                h = torch.relu(h @ w)  # (b, width)
                fn = hooks.get(f"hidden.{i}")
                new = fn(h[:, None, :], valid) if fn else None  # the protocol's (batch, tokens, d)
                h = h if new is None else new[:, 0]
            return ModelOutput(kind="embedding", embedding=h, embedding_name="last hidden layer")

    adapter = RunnableMLP(AdapterRequest(model="x", layers=["0"]))
    model, sae = HookedModel(adapter), load_sae(ckpt)
    reader = open_reader(cache)
    acts, index = reader.read_examples(48, 64, layers=[0])
    ds = open_dataset("gaussian:64", "vector")
    inputs = adapter.cached_inputs(index, ds)
    result = model.run(inputs, SAEHook(sae))
    assert torch.allclose(result.features[sae.cfg.name].dense(), sae.encode(acts[:, 0, 0]), atol=1e-6)
    assert torch.equal(model.run(inputs, SAEHook(sae, splice=True, keep_error=True)).output.embedding,
                       result.output.embedding)
    res = splice_metrics(adapter, sae, "hidden.0", index, acts[:, 0], kinds=["token"], tokens="all", dataset=ds, batch_rows=5)
    spliced = model.run(inputs, SAEHook(sae, splice=True)).output.embedding
    want = F.cosine_similarity(result.output.embedding, spliced, dim=-1)
    assert res["kind"] == "embedding_cosine" and res["cache_rel_error"] < 1e-6
    assert res["embedding_cosine"] == pytest.approx(float(want.mean()), abs=1e-6)
    assert res["embedding_cosine_se"] == pytest.approx(float(want.std() / len(want) ** 0.5), rel=1e-4)


def test_transcoders_record_but_refuse_splicing() -> None:
    """A transcoder reads one layer and writes another: its features can be recorded, but
    splicing or editing it at one layer is refused with one line (downstream splices it)."""
    from sae_core.checkpoint import build_sae

    d, d_out, d_sae = 4, 3, 8
    gen = torch.Generator().manual_seed(0)
    tensors = {"W_enc": torch.randn(d, d_sae, generator=gen), "b_enc": torch.zeros(d_sae),
               "W_dec": torch.randn(d_sae, d_out, generator=gen), "b_dec": torch.zeros(d_out)}
    sae = build_sae({"name": "tc", "architecture": "relu", "d_in": d, "d_sae": d_sae, "d_out": d_out,
                     "source": {"layer": "blocks.0.ln2.hook_normalized", "layer_out": "blocks.0.hook_mlp_out"}}, tensors)
    assert SAEHook(sae).layer == "blocks.0.ln2.hook_normalized"  # recording: codes of the input layer
    for kwargs in ({"splice": True}, {"edits": [Ablate([0])]}, {"edits": [Steer(1, 2.0)]}):
        with pytest.raises(SAEError, match=r"tc is a transcoder .* is not supported"):
            SAEHook(sae, **kwargs)
