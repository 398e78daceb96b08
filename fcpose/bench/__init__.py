"""Benchmarking, one home: the machinery behind ``fcpose bench`` and the ``benchmarks/`` scripts.

* :mod:`fcpose.bench.command` — the ``fcpose bench`` command body (which benchmark, print, JSON);
* :mod:`fcpose.bench.people` — time and memory vs the number of people (network, selection/NMS, heads) on
  the real :class:`~fcpose.inference.runner.InferenceRunner`, FLOPs, JSON reports;
* :mod:`fcpose.bench.machine` — the machine, its contention, peak memory and the convolution probe;
* :mod:`fcpose.bench.backends` — the same image through each backend (torch, onnxruntime, OpenVINO fp32/int8);
* :mod:`fcpose.bench.video` — the threaded video pipeline vs the network alone.

The ``benchmarks/`` scripts are thin drivers of these (plus the accuracy studies) that print and write JSON.
"""
