"""The decoder: SID vocabulary (``vocab``), tokenizer (``tokenizer``), the one prompt template
(``prompt``), the Qwen3 model (``model``) and a stored decoder version (``bundle``)."""
