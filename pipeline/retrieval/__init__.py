"""Stage 2, retrieval: chunking, embeddings, the Qdrant store, ingest, and the context a job gets."""
