"""Stage 1, intent: what the request wants (a classifier over sentence embeddings) and a screen
for instructions aimed at the model."""
