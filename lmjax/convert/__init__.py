"""Checkpoint conversion to and from other ecosystems (`hf`: Hugging Face BERT and GPT-2)."""
