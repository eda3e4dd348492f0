"""The blueprint format: model, quantities, safe loading and the dependency graph."""
