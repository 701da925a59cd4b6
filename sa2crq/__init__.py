"""The composition root: the ``sa2crq`` command (``cli``), the main job (``demo``) and the wiring
that joins the two wings (``wiring``). It is the one package that imports both ``indexer`` and
``service``; they import only the shared core ``sidcore`` and ``model_store``."""
