"""The shared core both wings stand on: the indexer (offline) and the service (online).

    catalog → indexer → artifacts (model_store) → sidcore ← service

What lives here is what a SID *is* and how one is decoded, so offline evaluation and the service
run the same code: SIDs and their text form (``sid``), errors (``errors``), MiniLM embeddings
(``embed``), the index in its three forms (``index``: the artifact on disk, the versions in Redis,
the in-memory trie and its decode mask), the decoder (``decoder``: SID vocabulary, tokenizer, prompt
template, model, the stored bundle), the engine interface with the beam search and the torch engine
(``engines``), and the request → prompt → SIDs → items pipeline (``retriever``).
"""
