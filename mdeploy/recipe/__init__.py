"""The recipe language: YAML + extends + --set overrides -> a validated, frozen Recipe."""

from mdeploy.recipe.loader import load_recipe
from mdeploy.recipe.schema import ARTIFACT_IDS, TFLITE_VARIANTS, Recipe
from mdeploy.recipe.source import Mark, RecipeIssue

__all__ = ["ARTIFACT_IDS", "TFLITE_VARIANTS", "Mark", "Recipe", "RecipeIssue", "load_recipe"]
