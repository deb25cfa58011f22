"""Models-from-code entry: MLflow runs this file to get the denoiser pyfunc.

Logged by ``mlflow.pyfunc.log_model(python_model=models_from_code_path(), ...)``;
the weights and architecture come in as artifacts, so no pickled code is stored.
"""
from mlflow.models import set_model

from stemreg.models.mlflow_model import DenoiserPyfunc

set_model(DenoiserPyfunc())
