"""The vLLM engine (``vllm_engine``) and its logits processor (``vllm_processor``): the production
GPU path. vLLM is imported lazily; importing this package never needs it installed."""
