"""Metric learning: datasets, samplers, miners, losses, trainer, evaluation."""
