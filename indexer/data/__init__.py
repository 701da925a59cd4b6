from indexer.data.catalog import (
    Catalog,
    DataError,
    count_popularity,
    load_items,
    load_qrels,
    load_sequences,
    load_vectors,
)

__all__ = ["Catalog", "DataError", "count_popularity", "load_items", "load_qrels", "load_sequences", "load_vectors"]
