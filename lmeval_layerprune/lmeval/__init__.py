"""lm-evaluation-harness integration: the pruned-hf / pruned-vllm models, registration, results."""
