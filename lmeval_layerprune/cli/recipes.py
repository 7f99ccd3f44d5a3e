"""``lmeval-prune recipes``: the bundled recovery recipes (``--path``: their folder)."""

from __future__ import annotations

import argparse

from lmeval_layerprune.heal.recipe import list_recipes, recipes_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recipes")
    p.add_argument("--path", action="store_true", help="print the folder of bundled recipes and accelerate configs")
    p.set_defaults(func=run_recipes)


def run_recipes(args: argparse.Namespace) -> int:
    if args.path:
        print(recipes_dir())
        return 0
    recipes = list_recipes()
    width = max(map(len, recipes), default=10)
    for name, desc in recipes.items():
        print(f"{name:<{width}}  {desc}")
    print(f"\n(folder: {recipes_dir()}; accelerate configs in {recipes_dir() / 'accelerate'})")
    return 0
