"""Features: the point-in-time feature tables and request-time features (``tables``), and
working with the Feast repository: apply, materialise, read online, compare (``store``)."""
