"""What pruning buys: speed and memory benchmarks, self-speculative decoding, token agreement."""
