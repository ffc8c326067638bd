"""Optuna-aware SageMaker training entry point for Chainer models."""
