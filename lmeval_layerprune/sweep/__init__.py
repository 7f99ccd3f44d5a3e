"""The study's grid: cells, one lm-eval run each, behind an executor seam."""
