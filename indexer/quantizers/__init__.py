"""Quantizers behind one interface, found by name in ``REGISTRY``."""

from indexer.quantizers.base import REGISTRY, Quantizer, QuantizerConfig, load_quantizer
from indexer.quantizers.rq_kmeans import RQKMeans
from indexer.quantizers.rq_vae import ACRQ, RQVAE

__all__ = ["ACRQ", "REGISTRY", "RQKMeans", "RQVAE", "Quantizer", "QuantizerConfig", "load_quantizer"]
