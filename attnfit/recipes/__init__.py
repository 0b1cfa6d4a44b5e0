"""Recipes: turn a composed config into data, model and trainer, and run them (torchtune-style)."""
