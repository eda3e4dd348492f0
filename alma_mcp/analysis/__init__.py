"""The analysis tools' domain logic: pure functions from blueprints to results, deterministic."""
