"""What pruning buys: speed and memory benchmarks, self-speculative decoding, token agreement.

``bench_result`` (the bench record: schema, reading) <- ``bench_output`` (write, table, plot) <-
``bench_vllm`` (the vLLM backend) <- ``bench`` (BenchSettings, run_bench, measuring with transformers);
``speculate`` (decoding, agreement, draft search on :mod:`lmeval_layerprune.search.greedy`) <-
``speculate_run`` (SpeculateSettings, run_speculate).
"""
