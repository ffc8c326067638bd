"""What a training job and the laptop CLI share about one Optuna study.

The hyperparameter schema and its tables (settings, samplers, pruners), locating and opening the
study's database (database/), the study's best trial and the lean read of its trials (trials),
and the report written from it (report). Private Optuna use sits behind one version-checked
adapter (optuna_private). Imported by entrypoint/ (the job) and launcher/ (the laptop); imports
neither. The name is distinctive on purpose: a user's source_dir is on sys.path in a job.
"""
