"""Shared logic of the pipeline stages: HH-RLHF parsing, params, models, generation, judges and rates."""
