"""Weights to and from other libraries' formats (Hugging Face `transformers`), one file per architecture."""
