"""SAELens interop, checked with the real sae_lens package in both directions."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.checkpoints import D_IN, D_SAE, tiny_checkpoint
from sae_core.checkpoint import load_sae

CASES = [("relu", {}), ("topk", {"k": 5}), ("batchtopk", {"k": 5}), ("jumprelu", {}), ("gated", {}),
         ("matryoshka", {"k": 5, "base": "topk"}), ("matryoshka", {"k": 5, "base": "batchtopk"})]


@pytest.mark.parametrize(("arch", "hyper"), CASES)
def test_export_loads_in_saelens_with_same_outputs(run_cli, tmp_path: Path, arch: str, hyper: dict) -> None:
    from sae_lens import SAE

    ckpt = tiny_checkpoint(tmp_path, arch, hyper)
    out = tmp_path / "exported"
    code, _, err = run_cli("export", str(ckpt), "--format", "saelens", "--out", str(out))
    assert code == 0, err
    theirs = SAE.load_from_disk(str(out), device="cpu")
    ours = load_sae(ckpt)
    x = torch.randn(32, D_IN) * 2
    with torch.no_grad():
        f_ours, f_theirs = ours.encode(x), theirs.encode(x)
        torch.testing.assert_close(f_theirs, f_ours, rtol=1e-4, atol=1e-5)
        assert (f_ours > 0).any()
        torch.testing.assert_close(theirs.decode(f_theirs), ours.decode(f_ours), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", ["standard", "topk", "jumprelu", "gated"])
def test_import_saelens_checkpoint(tmp_path: Path, arch: str) -> None:
    from sae_lens.saes.gated_sae import GatedSAE, GatedSAEConfig
    from sae_lens.saes.jumprelu_sae import JumpReLUSAE, JumpReLUSAEConfig
    from sae_lens.saes.standard_sae import StandardSAE, StandardSAEConfig
    from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig

    classes = {"standard": (StandardSAE, StandardSAEConfig, {}),
               "topk": (TopKSAE, TopKSAEConfig, {"k": 6, "rescale_acts_by_decoder_norm": True}),
               "jumprelu": (JumpReLUSAE, JumpReLUSAEConfig, {}), "gated": (GatedSAE, GatedSAEConfig, {})}
    cls, cfg_cls, kw = classes[arch]
    torch.manual_seed(1)
    theirs = cls(cfg_cls(d_in=D_IN, d_sae=D_SAE, apply_b_dec_to_input=False, **kw))
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            p.copy_(torch.randn_like(p) * (0.3 if "W_" not in name else 1.0))
            if name == "threshold":
                p.copy_(torch.rand_like(p) * 0.5)
    theirs.save_model(str(tmp_path / "sl"))
    ours = load_sae(tmp_path / "sl")  # load_sae recognises sae_weights.safetensors
    x = torch.randn(32, D_IN)
    with torch.no_grad():
        torch.testing.assert_close(ours.encode(x), theirs.encode(x), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(ours(x), theirs.decode(theirs.encode(x)), rtol=1e-4, atol=1e-4)


def test_export_errors(run_cli, tmp_path: Path) -> None:
    ckpt = tiny_checkpoint(tmp_path, "topk", {"k": 5})
    code, _, err = run_cli("export", str(ckpt), "--format", "onnx", "--out", str(tmp_path / "o"))
    assert code == 1 and "unknown export format 'onnx'" in err
