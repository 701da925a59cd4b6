"""Offline evaluation: every indexing method and baseline on one test split (``sa2crq eval``)."""
