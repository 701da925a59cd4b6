"""Offline indexer: catalog -> embeddings -> quantizer -> SARQ -> variable-length SIDs -> artifacts."""
