"""``python -m sae_core ...`` (also what ``torchrun -m sae_core`` runs)."""

from sae_core.cli import main

if __name__ == "__main__":
    main()
