"""Speed and memory measurements: one ``bench_<topic>.py`` per topic, each with a ``main()`` that
prints what it measured and returns a dict of numbers. ``python -m benchmarks`` (``make bench``)
runs them all and writes ``build/benchmarks.json``. Speed targets live here, never in tests."""
