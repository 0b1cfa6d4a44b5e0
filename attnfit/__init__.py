"""attnfit: build attention models from scratch, pretrain them and fine-tune them."""

__version__ = "0.1.0"
