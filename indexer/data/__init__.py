from indexer.data.catalog import Catalog, count_popularity, load_items, load_qrels, load_sequences, load_vectors
from sidcore.errors import DataError

__all__ = ["Catalog", "DataError", "count_popularity", "load_items", "load_qrels", "load_sequences", "load_vectors"]
