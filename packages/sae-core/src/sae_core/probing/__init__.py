"""Probing: how well SAE latents predict labels (``sae probe`` / the ``probe`` analysis).

- :mod:`.labels`: label sources — the dataset's own classes (image folders), a CSV/JSONL file of
  example labels, token-level labels (a JSONL file of positions, or a regex over token strings);
- :mod:`.ranking`: each latent alone as a classifier — average precision and best-threshold F1,
  computed from the sparse codes exactly (ties included, as scikit-learn counts them);
- :mod:`.linear`: a sparse (L1) logistic-regression probe on all latents, in torch.
"""
