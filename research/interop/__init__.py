"""Moving lineage models to and from other libraries (Hugging Face transformers)."""
