"""The scheduled-snapshot Lambda: ``snapshot_lambda.handler.handler``. Its zip holds this package and only the
``dr`` modules it imports (``infra/lambda_package.py``)."""
