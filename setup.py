from setuptools import find_packages, setup

setup(
    name="lmjax",
    version="0.1.0",
    description="Transformer language models (GPT, BERT) in JAX/Flax",
    packages=find_packages(include=["lmjax", "lmjax.*"]),
    package_data={"lmjax": ["data/assets/*/*", "data/assets/*/*/*", "models/kernels/*.cc"]},
    python_requires=">=3.11",
    install_requires=[
        # A set installed and tested together (Python 3.11, CPU); see README.
        "jax==0.10.2",
        "jaxlib==0.10.2",
        "flax==0.12.8",
        "optax==0.2.8",
        "orbax-checkpoint==0.12.8",
        "ml-collections==1.1.0",
        "grain==0.2.18",
        "tensorflow-datasets==4.9.10",
        "importlib_resources==7.1.0",  # tfds 4.9.10 imports it but declares it for Python < 3.9
        "tensorflow-cpu==2.21.0",
        "tensorboard==2.21.0",
        "tokenizers==0.22.2",
        "safetensors==0.8.0",  # Hugging Face checkpoints, read and written without torch
        "absl-py==2.5.1",
        "numpy==2.4.6",
        "matplotlib==3.11.2",
        "submitit==1.5.4",
    ],
    extras_require={
        "test": [
            "pytest==9.2.0",
            "ruff==0.17.6",
            # Hugging Face parity tests (tests/test_hf.py); the last 4.x has the models lmjax
            # converts. On Linux x86-64 pip takes the CPU build of torch where one is offered.
            "transformers==4.57.6",
            "torch==2.13.0",
            "scikit-learn==1.9.1",  # reference for the GLUE metrics (tests/test_glue_metrics.py)
        ]
    },
)
