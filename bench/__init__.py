"""Benchmarks (`leadline bench`, soak, ingestion), their recorded results, and the JACK rig they share with the
tests. Not daemon code: the daemon never imports this package, nor training."""
