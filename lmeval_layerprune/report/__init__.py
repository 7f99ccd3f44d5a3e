"""Statistics, Markdown and plots over lm-eval results; the analysis views."""
