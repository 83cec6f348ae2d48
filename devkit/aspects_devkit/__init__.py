"""The dev kit: everything that runs the system on one machine without a GPU, Docker or a
cloud account — the local Triton and S3 launchers, the one local stack (export → CPU model
repository → Triton (+ S3)) used by the demo, the tests and the benchmarks, and the demo.
CLI: ``aspects-dev serve-local | demo``."""
