"""Benchmarking, one home: ``fcpose bench`` (:mod:`.command`) and what the ``benchmarks/`` scripts drive — time,
memory and FLOPs against people (:mod:`.people`), the machine and its probes (:mod:`.machine`), the backends
(:mod:`.backends`) and the threaded video pipeline (:mod:`.video`)."""
