"""``attnfit-serve``: a saved model behind an HTTP JSON API, with the attention explorer page at ``/``."""

from attnfit.serve.app import Limits, create_app

__all__ = ["Limits", "create_app"]
