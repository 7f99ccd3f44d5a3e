"""Recovery: recipes, prompt sets, self-generated responses and training."""
