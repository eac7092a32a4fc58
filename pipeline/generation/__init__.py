"""Stage 3, generation: the offline extractive generator, the LLM generator, prompts, and the
provider layer under it (``llm/``)."""
