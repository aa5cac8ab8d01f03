"""ViT adapters: open_clip (``clip``) and timm (``timm``)."""
