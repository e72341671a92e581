"""ttc_jax: scaling LLM test-time compute (Snell et al. 2024) in JAX."""

from setuptools import find_packages, setup

setup(
    name="ttc_jax",
    version="0.1.0",
    description="Compute-optimal test-time compute (PRM search, revisions) in JAX/Flax.",
    python_requires=">=3.11",
    packages=find_packages(include=["ttc_jax", "ttc_jax.*"]),
    install_requires=[
        "jax>=0.7",
        "flax>=0.12",
        "optax>=0.2.5",
        "orbax-checkpoint>=0.11",
        "etils[epath]>=1.7",  # every path, local or gs:// (ttc_jax/io/paths.py)
        "google-cloud-storage>=2.14",  # TensorBoard events into a gs:// workdir
        "tensorflow>=2.18",
        "tensorflow-datasets>=4.9.8",
        "seqio>=0.0.20",
        "numpy>=2.0",
        "scipy>=1.13",  # ttc_jax.stats
        "ml_collections>=1.0",
        "absl-py>=2.1",
        "tqdm>=4.66",
        "matplotlib>=3.8",
        "tensorboardX>=2.6",
        "safetensors>=0.4",
        "editdistance>=0.6",
        "tokenizers>=0.20",  # ttc_jax/tokenizers/hf.py: tokenizer.json of real models
        "jinja2>=3.1.6",  # their chat templates, rendered in a sandbox
        "math-verify[antlr4_13_2]>=0.9",  # MATH answers (ttc_jax/tasks/math/grader.py)
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "hypothesis>=6.100",  # tests/test_fuzz.py
            "import-linter>=2.16,<3",  # .importlinter: the layer contract (tests/test_architecture.py)
            "nbclient>=0.10",  # colabs/*.ipynb executed top to bottom by the tests
            "nbformat>=5.10",
            "ipykernel>=6.29",
            "gcsfs>=2024.2",  # gs:// through fsspec against a local GCS emulator
            "gcp-storage-emulator>=2024.8",
            "torch==2.13.0",
            "transformers>=4.45",
        ],
    },
    entry_points={"console_scripts": ["ttc-jax=ttc_jax.main:run"]},
)
