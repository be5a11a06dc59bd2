"""``corediff recipe validate|show|schema``: check a recipe, print it resolved, or write the
JSON Schema of recipes."""

from __future__ import annotations

import argparse
import json

from corediff.paths import check_file
from corediff.recipe import load_recipe, recipe_json_schema, recipe_to_toml


def validate(args: argparse.Namespace) -> int:
    load_recipe(args.recipe, args.overrides)
    print(f"{args.recipe}: ok")
    return 0


def show(args: argparse.Namespace) -> int:
    print(recipe_to_toml(load_recipe(args.recipe, args.overrides)), end="")
    return 0


def schema(args: argparse.Namespace) -> int:
    if args.out:
        check_file("--out", args.out)
    text = json.dumps(recipe_json_schema(), indent=2)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
    else:
        print(text)
    return 0
